"""MovieLens-100k next-item evaluation: a neural encoder against popularity and item-kNN, all
computed in this run with the same leave-one-out split, the same protocol and full ranking over
all items.

Reads the atomic files from ../shared/datasets/ml-100k (or --data). Ratings are events of type
"rating" in time order, same-second ratings in file order (a stable sort); the rating itself is
not an input. --exclude-history no (the default) ranks every item, the user's already-rated ones
included, as RecBole's sequential evaluation does; yes removes them. Ties count against the
target. --seeds N trains N seeds and reports the mean, the sample standard deviation and each
seed's figure. Prints one JSON line last.

--content adds the pretrained text encoder's vectors of each movie's title and genres to its item
embedding. --withhold-items F makes a seeded fraction F of the items cold on purpose: they are
removed from every training sequence (input and target) but stay in the test, and the test
metrics are reported separately for users whose test item is cold and warm, so the run shows what
content does for items nobody was seen with.

--world-size W (W > 1) trains the same configuration again in the same invocation, data-parallel
with W processes on this host (torchrun --standalone; DDP, gloo on CPU, NCCL with one GPU each;
per-process batch = --batch-size / W, so the global batch is the same), and reports its epoch time
and NDCG@10 beside the one-process run's under "data_parallel". Each process uses one torch thread
unless OMP_NUM_THREADS says otherwise.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.ml import content, data, distributed  # noqa: E402
from training.ml.baselines import ItemKNN, popularity_scores  # noqa: E402
from training.ml.config import EncoderConfig, TrainConfig  # noqa: E402
from training.ml.metrics import ranking_metrics, target_ranks  # noqa: E402
from training.ml.trainer import evaluate, evaluate_ranks, refit, train  # noqa: E402

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


def without_last_item(seqs: data.Sequences) -> data.Sequences:
    """The same sequences less each customer's last item token and what follows it: leave-one-out
    on these tests on the second-last item and validates on the third-last (the second split)."""
    cuts = [int(np.flatnonzero(items > 0)[-1]) if (items > 0).any() else len(items) for items in seqs.items]
    return data.Sequences(
        customers=seqs.customers, price_edges=seqs.price_edges,
        **{name: [values[:cut] for values, cut in zip(getattr(seqs, name), cuts, strict=True)]
           for name in ("items", "event_types", "gaps", "prices", "times")},
    )


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype="float64")
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _train_config(args, seed: int, exclude: bool) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                       seed=seed, weight_decay=args.weight_decay, schedule=args.schedule, warmup=args.warmup,
                       exclude_seen=exclude, shift_windows=args.shift_windows)


def _withheld(args, seed: int, n_items: int) -> np.ndarray | None:
    if args.withhold_items <= 0:
        return None
    rng = np.random.default_rng(seed + 1)
    return np.sort(rng.choice(np.arange(1, n_items + 1), size=int(args.withhold_items * n_items), replace=False))


def _rank_main(args, seqs, split, config, n_items, item_content, exclude) -> None:
    """One process of the --world-size launch: the same training, data-parallel; rank 0 writes
    each seed's figures to --rank-report."""
    here = distributed.init_from_env()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    runs = []
    for seed in range(args.seed, args.seed + args.seeds):
        started = time.perf_counter()
        result = train(seqs=seqs, split=split, model_config=config, train_config=_train_config(args, seed, exclude),
                       item_content=item_content, withheld_items=_withheld(args, seed, n_items),
                       on_epoch=lambda h, seed=seed: print(f"[{here.size} processes] seed {seed} epoch {h['epoch']}: "
                                                           f"loss {h['loss']:.3f} valid {h['valid']}", file=sys.stderr))
        runs.append({"seed": seed, "test": result.test, "valid": result.best_valid, "epochs": len(result.history),
                     "best_epoch": result.best_epoch, "train_s": time.perf_counter() - started,
                     "epoch_s": float(np.mean([h["seconds"] for h in result.history])), "device": result.device,
                     "loss": [h["loss"] for h in result.history]})
    if here.writer:
        args.rank_report.write_text(json.dumps({"world_size": here.size, "runs": runs}))
    distributed.end_rank(0)


def _data_parallel(args, runs: list[dict]) -> dict:
    """Launch this script under torchrun with --world-size processes; their figures beside `runs`."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "ranks.json"
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        launched = time.perf_counter()
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                        str(args.world_size), "--max-restarts", "0", str(Path(__file__).resolve()), *sys.argv[1:],
                        "--rank-report", str(report)], env=env, check=True)
        wall_s = time.perf_counter() - launched
        ranks = json.loads(report.read_text())
    parallel = ranks["runs"]
    out = {"world_size": ranks["world_size"], "batch_per_process": args.batch_size // args.world_size,
           "device": parallel[0]["device"], "launch_wall_s": round(wall_s, 1)}
    for metric in ("ndcg@10", "hr@10"):
        values = [r["test"][metric] for r in parallel]
        out[f"{metric}_mean"], out[metric] = round(float(np.mean(values)), 4), [round(v, 4) for v in values]
    out["valid_ndcg@10"] = [round(r["valid"].get("ndcg@10", 0.0), 4) for r in parallel]
    out["epochs"], out["best_epoch"] = [r["epochs"] for r in parallel], [r["best_epoch"] for r in parallel]
    out["epoch_s"] = round(float(np.mean([r["epoch_s"] for r in parallel])), 2)
    out["train_s"] = round(float(np.mean([r["train_s"] for r in parallel])), 1)
    one_epoch_s = float(np.mean([r["epoch_s"] for r in runs]))
    out["epoch_speedup"] = round(one_epoch_s / max(out["epoch_s"], 1e-9), 2)  # one process's epoch time / this one's
    # the first epoch's loss of both: the same global batch, so they differ only by dropout masks and float order
    out["first_epoch_loss"] = [round(r["loss"][0], 4) for r in parallel]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", choices=list(ARCH_NAMES), default="transformer")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("PORTRAIT_DATASETS", ROOT.parent / "shared" / "datasets")) / "ml-100k")
    parser.add_argument("--exclude-history", choices=["yes", "no"], default="no",
                        help="remove each user's already-rated items from the ranking (validation and test, the "
                             "baselines too); 'no' is RecBole's protocol, the reference comparison")
    parser.add_argument("--seeds", type=int, default=1, help="train this many seeds (--seed, --seed + 1, ...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    parser.add_argument("--warmup", type=float, default=0.05, help="fraction of the planned steps")
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-shift-windows", dest="shift_windows", action="store_false",
                        help="cut long histories at the same places every epoch")
    parser.add_argument("--refit", action="store_true",
                        help="after early stopping, retrain as many epochs on everything but the test items "
                             "(validation items included) and report that model too; item-kNN gets the same data")
    parser.add_argument("--no-long-term", dest="long_term", action="store_false")
    parser.add_argument("--repeat-bias", action="store_true",
                        help="a learned score offset for items already in the visible history (models.SequenceEncoder)")
    parser.add_argument("--aux-weight", type=float, default=0.0)
    parser.add_argument("--future-window", type=int, default=1, help="train on each of the next k items")
    parser.add_argument("--content", action="store_true", help="add pretrained title+genre vectors to item embeddings")
    parser.add_argument("--withhold-items", type=float, default=0.0, help="fraction of items made cold on purpose")
    parser.add_argument("--world-size", type=int, default=1,
                        help="also train data-parallel with this many processes (torchrun) and report it beside")
    parser.add_argument("--rank-report", type=Path, help=argparse.SUPPRESS)  # where rank 0 of that launch writes
    parser.add_argument("--split", choices=["last", "second-last"], default="last",
                        help="test on each user's last item (validation: second-last), or, the second split, on the "
                             "second-last (validation: third-last; the last item is dropped from everything)")
    args = parser.parse_args()
    if args.world_size < 1 or args.batch_size % args.world_size:
        parser.error("--world-size must be at least 1 and divide --batch-size")
    exclude = args.exclude_history == "yes"

    seqs, n_items, texts = load(args.data)
    if args.split == "second-last":
        seqs = without_last_item(seqs)
    split = data.leave_one_out(seqs)
    seen = data.seen_items(seqs, split.rows, split.test_cut) if exclude else None
    targets = torch.as_tensor(split.test_item)
    history = [seqs.items[r][:c] for r, c in zip(split.rows, split.test_cut, strict=True)]
    train_only = [seqs.items[r][:c] for r, c in zip(split.rows, split.valid_cut, strict=True)]

    item_content, content_s = None, None
    if args.content:
        began = time.perf_counter()
        item_content = content.text_vectors(texts)
        content_s = time.perf_counter() - began
    config = EncoderConfig(arch=args.arch, n_items=n_items, dim=args.dim, max_len=args.max_len, layers=args.layers,
                           heads=args.heads, dropout=args.dropout, future_window=args.future_window,
                           long_term=args.long_term, aux_weight=args.aux_weight, repeat_bias=args.repeat_bias,
                           content_dim=content.CONTENT_DIM if args.content else 0)
    if distributed.launched():  # one process of the --world-size launch
        return _rank_main(args, seqs, split, config, n_items, item_content, exclude)
    runs, baselines = [], {}
    for seed in range(args.seed, args.seed + args.seeds):
        withheld = _withheld(args, seed, n_items)
        known = train_only if withheld is None else [np.where(np.isin(h, withheld), 0, h) for h in train_only]
        # the baselines must not see the cold items either; without withheld items they are the same every seed
        pop = ranking_metrics(target_ranks(popularity_scores(known, n_items, len(split.rows)), targets, seen))
        knn_model = ItemKNN(known, n_items)
        knn_ranks = target_ranks(knn_model.scores(history), targets, seen)
        knn = ranking_metrics(knn_ranks)
        baselines.setdefault("pop", []).append(pop)
        baselines.setdefault("itemknn", []).append(knn)
        other_seen = None if exclude else data.seen_items(seqs, split.rows, split.test_cut)
        baselines.setdefault("other_pop", []).append(ranking_metrics(target_ranks(
            popularity_scores(known, n_items, len(split.rows)), targets, other_seen)))
        baselines.setdefault("other_itemknn", []).append(ranking_metrics(target_ranks(
            knn_model.scores(history), targets, other_seen)))
        settings = _train_config(args, seed, exclude)
        # The other protocol from the same training run: its own validation picks its epoch among
        # those run (the trajectory does not depend on the protocol; only where it stops does).
        other = {"best": -1.0, "epoch": -1, "test": {}, "stale": 0}

        def inspect(model, record, other=other):
            device = next(model.parameters()).device
            valid = evaluate(model, seqs, split.rows, split.valid_cut, split.valid_item, k=10, device=device,
                             exclude_seen=not exclude)
            if valid["ndcg@10"] > other["best"]:
                test = evaluate(model, seqs, split.rows, split.test_cut, split.test_item, k=10, device=device,
                                exclude_seen=not exclude)
                other.update(best=valid["ndcg@10"], epoch=record["epoch"], test=test, stale=0)
            else:
                other["stale"] += 1

        started = time.perf_counter()
        result = train(seqs=seqs, split=split, model_config=config, train_config=settings, item_content=item_content,
                       withheld_items=withheld, inspect=inspect,
                       on_epoch=lambda h, seed=seed: print(f"seed {seed} epoch {h['epoch']}: loss {h['loss']:.3f} "
                                                           f"valid {h['valid']}", file=sys.stderr))
        run = {"seed": seed, "test": result.test, "valid": result.best_valid, "epochs": len(result.history),
               "best_epoch": result.best_epoch, "train_s": time.perf_counter() - started,
               "epoch_s": float(np.mean([h["seconds"] for h in result.history])), "device": result.device,
               "other": other, "loss": [h["loss"] for h in result.history]}
        if args.refit:
            refitted = refit(seqs=seqs, split=split, model_config=config, train_config=settings,
                             epochs=result.best_epoch + 1, item_content=item_content, withheld_items=withheld)
            run["refit"] = refitted.test
            run["itemknn_refit"] = ranking_metrics(target_ranks(ItemKNN(history, n_items).scores(history), targets, seen))
        if withheld is not None:
            ranks = evaluate_ranks(result.model, seqs, split.rows, split.test_cut, split.test_item,
                                   device=torch.device(result.device), exclude_seen=exclude)
            cold = torch.as_tensor(np.isin(split.test_item, withheld))
            run["cold"] = {}
            for name, mask in (("cold", cold), ("warm", ~cold)):
                run["cold"][f"{name}_users"] = int(mask.sum())
                run["cold"][f"{name}_ndcg@10"] = ranking_metrics(ranks[mask])["ndcg@10"]
                run["cold"][f"itemknn_{name}_ndcg@10"] = ranking_metrics(knn_ranks[mask])["ndcg@10"]
        print(json.dumps({"seed": seed, **{f"{m}": round(v, 4) for m, v in result.test.items()},
                          "valid_ndcg@10": round(result.best_valid.get("ndcg@10", 0.0), 4),
                          "best_epoch": result.best_epoch}), file=sys.stderr)
        runs.append(run)

    out = {"arch": args.arch, "exclude_history": args.exclude_history, "split": args.split, "seeds": [r["seed"] for r in runs]}
    for metric in ("ndcg@10", "hr@10", "mrr"):
        values = [r["test"][metric] for r in runs]
        mean, sd = _mean_sd(values)
        out[f"{metric}_mean"], out[f"{metric}_sd"], out[metric] = round(mean, 4), round(sd, 4), [round(v, 4) for v in values]
    valid = [r["valid"].get("ndcg@10", 0.0) for r in runs]
    out["valid_ndcg@10_mean"], out["valid_ndcg@10"] = round(float(np.mean(valid)), 4), [round(v, 4) for v in valid]
    other_name = "exclude_history_" + ("no" if exclude else "yes")
    for name, per_seed in baselines.items():
        name = name.replace("other_", other_name + "_")
        for metric in ("ndcg@10", "hr@10"):
            values = [b[metric] for b in per_seed]
            out[f"{name}_{metric}"] = round(float(np.mean(values)), 4)
            if len(set(values)) > 1:
                out[f"{name}_{metric}_sd"] = round(_mean_sd(values)[1], 4)
    # the other protocol, each seed's epoch chosen on that protocol's validation among the epochs
    # run; "still_improving" counts the seeds where it had not been stale for --patience epochs
    # when the primary protocol stopped (a separate run would have gone on)
    for metric in ("ndcg@10", "hr@10"):
        values = [r["other"]["test"][metric] for r in runs]
        mean, sd = _mean_sd(values)
        out[f"{other_name}_{metric}_mean"], out[f"{other_name}_{metric}_sd"] = round(mean, 4), round(sd, 4)
        out[f"{other_name}_{metric}"] = [round(v, 4) for v in values]
    out[f"{other_name}_best_epoch"] = [r["other"]["epoch"] for r in runs]
    out[f"{other_name}_still_improving"] = sum(r["other"]["stale"] < args.patience for r in runs)
    if args.refit:
        for metric in ("ndcg@10", "hr@10"):
            values = [r["refit"][metric] for r in runs]
            out[f"refit_{metric}_mean"], out[f"refit_{metric}_sd"] = (round(v, 4) for v in _mean_sd(values))
            out[f"refit_{metric}"] = [round(v, 4) for v in values]
        out["itemknn_refit_ndcg@10"] = round(float(np.mean([r["itemknn_refit"]["ndcg@10"] for r in runs])), 4)
    if args.withhold_items > 0:
        for key in runs[0]["cold"]:
            out[key] = round(float(np.mean([r["cold"][key] for r in runs])), 4)
        out["withheld_items"] = int(args.withhold_items * n_items)
    if content_s is not None:
        out["content_s"] = round(content_s, 1)
    if args.world_size > 1:
        out["first_epoch_loss"] = [round(r["loss"][0], 4) for r in runs]
        out["data_parallel"] = _data_parallel(args, runs)
    out.update({
        "epochs": [r["epochs"] for r in runs], "best_epoch": [r["best_epoch"] for r in runs],
        "epoch_s": round(float(np.mean([r["epoch_s"] for r in runs])), 2),
        "train_s": round(float(np.mean([r["train_s"] for r in runs])), 1), "device": runs[0]["device"],
        "threads": torch.get_num_threads(), "users": int(len(split.rows)), "items": n_items,
        "config": {"lr": args.lr, "schedule": args.schedule, "warmup": args.warmup, "weight_decay": args.weight_decay,
                   "batch_size": args.batch_size, "epochs": args.epochs, "patience": args.patience,
                   "shift_windows": args.shift_windows, "dropout": args.dropout, "max_len": args.max_len, "dim": args.dim,
                   "layers": args.layers, "heads": args.heads, "content": args.content,
                   "future_window": args.future_window, "long_term": args.long_term, "aux_weight": args.aux_weight,
                   "repeat_bias": args.repeat_bias},
    })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
