"""MovieLens-100k next-item evaluation: a neural encoder against popularity and item-kNN, all
computed in this run with the same leave-one-out split and full ranking over all items.

Reads the atomic files from ../shared/datasets/ml-100k (or --data). Ratings are events of type
"rating" in time order; the rating itself is not an input. Prints one JSON line last.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.ml import data  # noqa: E402
from training.ml.baselines import ItemKNN, popularity_scores  # noqa: E402
from training.ml.config import EncoderConfig, TrainConfig  # noqa: E402
from training.ml.metrics import ranking_metrics, target_ranks  # noqa: E402
from training.ml.trainer import train  # noqa: E402

ARCH_NAMES = {"transformer": "transformer", "gru": "gru", "cnn": "cnn"}
RATING_EVENT = 9


def load(path: Path) -> tuple[data.Sequences, int]:
    frame = pd.read_csv(path / "ml-100k.inter", sep="\t", header=0, names=["user", "item", "rating", "ts"])
    item_codes, _ = pd.factorize(frame["item"], sort=True)
    seqs = data.sequences_build(
        customers=frame["user"].to_numpy(), items=item_codes.astype("int64") + 1,
        event_types=np.full(len(frame), RATING_EVENT), times=frame["ts"].to_numpy("float64"),
        values=np.full(len(frame), np.nan),
    )
    return seqs, int(item_codes.max()) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", choices=list(ARCH_NAMES), default="transformer")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("PORTRAIT_DATASETS", ROOT.parent / "shared" / "datasets")) / "ml-100k")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.2)
    args = parser.parse_args()

    seqs, n_items = load(args.data)
    split = data.leave_one_out(seqs)
    seen = data.seen_items(seqs, split.rows, split.test_cut)
    targets = torch.as_tensor(split.test_item)
    history = [seqs.items[r][:c] for r, c in zip(split.rows, split.test_cut, strict=True)]
    train_only = [seqs.items[r][:c] for r, c in zip(split.rows, split.valid_cut, strict=True)]
    pop = ranking_metrics(target_ranks(popularity_scores(train_only, n_items, len(split.rows)), targets, seen))
    knn = ranking_metrics(target_ranks(ItemKNN(train_only, n_items).scores(history), targets, seen))

    config = EncoderConfig(arch=args.arch, n_items=n_items, dim=args.dim, max_len=args.max_len, layers=2, heads=2, dropout=args.dropout)
    settings = TrainConfig(epochs=args.epochs, batch_size=64, lr=args.lr, patience=args.patience, seed=args.seed)
    started = time.perf_counter()
    result = train(seqs=seqs, split=split, model_config=config, train_config=settings,
                   on_epoch=lambda h: print(f"epoch {h['epoch']}: loss {h['loss']:.3f} valid {h['valid']}", file=sys.stderr))
    epochs = len(result.history)
    print(json.dumps({
        "arch": args.arch, "hr@10": round(result.test["hr@10"], 4), "ndcg@10": round(result.test["ndcg@10"], 4),
        "mrr": round(result.test["mrr"], 4), "pop_hr@10": round(pop["hr@10"], 4), "pop_ndcg@10": round(pop["ndcg@10"], 4),
        "itemknn_hr@10": round(knn["hr@10"], 4), "itemknn_ndcg@10": round(knn["ndcg@10"], 4),
        "epochs": epochs, "best_epoch": result.best_epoch,
        "epoch_s": round(sum(h["seconds"] for h in result.history) / max(epochs, 1), 2),
        "train_s": round(time.perf_counter() - started, 1), "device": result.device, "users": int(len(split.rows)),
        "items": n_items, "lr": args.lr, "patience": args.patience, "dropout": args.dropout,
    }))


if __name__ == "__main__":
    main()
