"""MovieLens-100k next-item evaluation: a neural encoder against popularity and item-kNN, all
computed in this run with the same leave-one-out split and full ranking over all items.

Reads the atomic files from ../shared/datasets/ml-100k (or --data). Ratings are events of type
"rating" in time order; the rating itself is not an input. Prints one JSON line last.

--content adds the pretrained text encoder's vectors of each movie's title and genres to its item
embedding. --withhold-items F makes a seeded fraction F of the items cold on purpose: they are
removed from every training sequence (input and target) but stay in the test, and the test
metrics are reported separately for users whose test item is cold and warm, so the run shows what
content does for items nobody was seen with.
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

from training.ml import content, data  # noqa: E402
from training.ml.baselines import ItemKNN, popularity_scores  # noqa: E402
from training.ml.config import EncoderConfig, TrainConfig  # noqa: E402
from training.ml.metrics import ranking_metrics, target_ranks  # noqa: E402
from training.ml.trainer import evaluate_ranks, refit, train  # noqa: E402

ARCH_NAMES = {"transformer": "transformer", "gru": "gru", "cnn": "cnn"}
RATING_EVENT = 9


def load(path: Path) -> tuple[data.Sequences, int, list[str]]:
    """Sequences, item count, and each item index's text (title and genres; index 0 empty)."""
    frame = pd.read_csv(path / "ml-100k.inter", sep="\t", header=0, names=["user", "item", "rating", "ts"])
    item_codes, uniques = pd.factorize(frame["item"], sort=True)
    movies = pd.read_csv(path / "ml-100k.item", sep="\t", header=0, names=["item", "title", "year", "genres"],
                         dtype=str, keep_default_na=False).set_index("item")
    texts = [""] + [
        content.item_text(movies.at[str(i), "title"], movies.at[str(i), "genres"].split()) if str(i) in movies.index else ""
        for i in uniques
    ]
    seqs = data.sequences_build(
        customers=frame["user"].to_numpy(), items=item_codes.astype("int64") + 1,
        event_types=np.full(len(frame), RATING_EVENT), times=frame["ts"].to_numpy("float64"),
        values=np.full(len(frame), np.nan),
    )
    return seqs, int(item_codes.max()) + 1, texts


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
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--refit", action="store_true",
                        help="after early stopping, retrain as many epochs on everything but the test items "
                             "(validation items included) and report that model too; item-kNN gets the same data")
    parser.add_argument("--no-long-term", dest="long_term", action="store_false")
    parser.add_argument("--aux-weight", type=float, default=0.0)
    parser.add_argument("--future-window", type=int, default=1, help="train on each of the next k items")
    parser.add_argument("--content", action="store_true", help="add pretrained title+genre vectors to item embeddings")
    parser.add_argument("--withhold-items", type=float, default=0.0, help="fraction of items made cold on purpose")
    args = parser.parse_args()

    seqs, n_items, texts = load(args.data)
    withheld = None
    if args.withhold_items > 0:
        rng = np.random.default_rng(args.seed + 1)
        withheld = np.sort(rng.choice(np.arange(1, n_items + 1), size=int(args.withhold_items * n_items), replace=False))
    split = data.leave_one_out(seqs)
    seen = data.seen_items(seqs, split.rows, split.test_cut)
    targets = torch.as_tensor(split.test_item)
    history = [seqs.items[r][:c] for r, c in zip(split.rows, split.test_cut, strict=True)]
    train_only = [seqs.items[r][:c] for r, c in zip(split.rows, split.valid_cut, strict=True)]
    if withheld is not None:  # the baselines must not see the cold items either
        train_only = [np.where(np.isin(h, withheld), 0, h) for h in train_only]
    pop = ranking_metrics(target_ranks(popularity_scores(train_only, n_items, len(split.rows)), targets, seen))
    knn = ranking_metrics(target_ranks(ItemKNN(train_only, n_items).scores(history), targets, seen))

    item_content = None
    if args.content:
        began = time.perf_counter()
        item_content = content.text_vectors(texts)
        content_s = time.perf_counter() - began
    config = EncoderConfig(arch=args.arch, n_items=n_items, dim=args.dim, max_len=args.max_len, layers=args.layers,
                           heads=2, dropout=args.dropout, future_window=args.future_window, long_term=args.long_term, aux_weight=args.aux_weight, content_dim=content.CONTENT_DIM if args.content else 0)
    settings = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                           seed=args.seed, weight_decay=args.weight_decay)
    started = time.perf_counter()
    result = train(seqs=seqs, split=split, model_config=config, train_config=settings, item_content=item_content,
                   withheld_items=withheld,
                   on_epoch=lambda h: print(f"epoch {h['epoch']}: loss {h['loss']:.3f} valid {h['valid']}", file=sys.stderr))
    epochs = len(result.history)
    extra = {}
    if args.refit:
        refitted = refit(seqs=seqs, split=split, model_config=config, train_config=settings, epochs=result.best_epoch + 1,
                         item_content=item_content, withheld_items=withheld)
        knn_full = ranking_metrics(target_ranks(ItemKNN(history, n_items).scores(history), targets, seen))
        extra.update({f"refit_{m}": round(v, 4) for m, v in refitted.test.items()})
        extra.update({f"itemknn_refit_{m}": round(v, 4) for m, v in knn_full.items()})
        extra["refit_s"] = round(sum(h["seconds"] for h in refitted.history), 1)
    if args.content:
        extra["content_s"] = round(content_s, 1)
    if withheld is not None:
        ranks = evaluate_ranks(result.model, seqs, split.rows, split.test_cut, split.test_item, device=torch.device(result.device))
        knn_ranks = target_ranks(ItemKNN(train_only, n_items).scores(history), targets, seen)
        cold = torch.as_tensor(np.isin(split.test_item, withheld))
        for name, mask in (("cold", cold), ("warm", ~cold)):
            extra[f"{name}_users"] = int(mask.sum())
            extra[f"{name}_hr@10"] = round(ranking_metrics(ranks[mask])["hr@10"], 4)
            extra[f"{name}_ndcg@10"] = round(ranking_metrics(ranks[mask])["ndcg@10"], 4)
            extra[f"itemknn_{name}_ndcg@10"] = round(ranking_metrics(knn_ranks[mask])["ndcg@10"], 4)
        extra["withheld_items"] = len(withheld)
    print(json.dumps({
        "arch": args.arch, "hr@10": round(result.test["hr@10"], 4), "ndcg@10": round(result.test["ndcg@10"], 4),
        "mrr": round(result.test["mrr"], 4), "pop_hr@10": round(pop["hr@10"], 4), "pop_ndcg@10": round(pop["ndcg@10"], 4),
        "itemknn_hr@10": round(knn["hr@10"], 4), "itemknn_ndcg@10": round(knn["ndcg@10"], 4),
        "epochs": epochs, "best_epoch": result.best_epoch,
        "epoch_s": round(sum(h["seconds"] for h in result.history) / max(epochs, 1), 2),
        "train_s": round(time.perf_counter() - started, 1), "device": result.device, "users": int(len(split.rows)),
        "items": n_items, "lr": args.lr, "patience": args.patience, "dropout": args.dropout, "max_len": args.max_len,
        "dim": args.dim, "layers": args.layers, "weight_decay": args.weight_decay, "content": args.content, "future_window": args.future_window, "long_term": args.long_term, **extra,
    }))


if __name__ == "__main__":
    main()
