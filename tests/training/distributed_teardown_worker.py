"""One rank of tests/training/test_distributed.py's teardown test, started with the env://
variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and no launcher: a few data-parallel steps
of a tiny model and one all-reduce, then the product's `distributed.end_rank(0)`. With
--interpreter-exit it ends as ranks did before end_rank existed (close(), then interpreter
shutdown while gloo's worker threads may still need the GIL): how the test's figures for the old
ending were measured."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from training.ml import distributed  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    distributed.init_from_env(timeout_s=60)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1), find_unused_parameters=True)
    optimizer = torch.optim.AdamW(model.parameters())
    sys.setswitchinterval(30.0)  # the main thread keeps the GIL unless it waits: the race's worst case
    for _ in range(3):
        model(torch.randn(4, 8)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    distributed.all_reduce_sum(torch.tensor([1.0, 2.0], dtype=torch.float64)).tolist()
    if sys.argv[1:] == ["--interpreter-exit"]:
        distributed.close()
        return
    distributed.end_rank(0)


if __name__ == "__main__":
    main()
