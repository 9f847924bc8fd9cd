"""One rank of tests/training/test_distributed.py, started by torchrun: trains the test's small
synthetic shop data-parallel with the product's trainer and writes what the test compares (per
rank: parameters after the first step, loss curves, final parameters) into --out. No database.

Runs, in one launch (the rendezvous costs more than the training):
- full: the whole run, per-rank batch = global batch / world size;
- crash: the same run with checkpoints, dying after epoch 0 (the test resumes it in one process);
- resume (when --resume-dir exists): a run resumed from a one-process checkpoint."""

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.training.test_distributed import SETTINGS, model_config, parameters, shop  # noqa: E402
from training.ml import distributed  # noqa: E402
from training.ml.config import TrainConfig  # noqa: E402
from training.ml.data import leave_one_out  # noqa: E402
from training.ml.trainer import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--crash-dir", type=Path)
    parser.add_argument("--resume-dir", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    here = distributed.init_from_env(timeout_s=60)
    seqs = shop()
    split = leave_one_out(seqs)
    settings = TrainConfig(**SETTINGS)
    report = {"rank": here.rank, "world": here.size}

    after_first_step = {}

    def first_step(model, record):  # after epoch 0; a step-level view comes from the 1-epoch run below
        after_first_step.setdefault("epoch0", parameters(model).tolist())

    one_step = train(seqs=seqs, split=split, model_config=model_config(),
                     train_config=TrainConfig(**{**SETTINGS, "epochs": 1, "batch_size": len(seqs.customers) * 4}))
    report["one_step"] = parameters(one_step.model).tolist()  # one optimizer step: the whole epoch is one batch
    full = train(seqs=seqs, split=split, model_config=model_config(), train_config=settings, inspect=first_step)
    report["full"] = {"loss": [h["loss"] for h in full.history], "valid": [h["valid"] for h in full.history],
                      "test": full.test, "params": parameters(full.model).tolist(), **after_first_step}
    if args.crash_dir:
        try:
            train(seqs=seqs, split=split, model_config=model_config(), train_config=settings,
                  checkpoint_dir=args.crash_dir, crash_after_epoch=0)
        except RuntimeError as exc:
            report["crashed"] = str(exc)
    if args.resume_dir:
        resumed = train(seqs=seqs, split=split, model_config=model_config(), train_config=settings,
                        checkpoint_dir=args.resume_dir)
        report["resume"] = {"loss": [h["loss"] for h in resumed.history], "from": resumed.resumed_from_epoch,
                            "params": parameters(resumed.model).tolist()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"rank{here.rank}.json").write_text(json.dumps(report))
    distributed.end_rank(0)


if __name__ == "__main__":
    main()
