"""Data-parallel training across processes (PyTorch DistributedDataParallel under `torchrun`): who
this process is, the share of each global batch it trains on, and the few collectives the trainer
and the run service need. Pure torch; with one process every function is the identity, so the
single-process path is the code that ran before.

The scheme (what makes world size W with batches of B/W the same run as one process with B):
every rank builds the same model from the same seed (and DDP broadcasts rank 0's weights at
start), draws the same window shifts and the same permutation from the same NumPy state, and
takes every W-th window of each global batch of B: DistributedSampler's strided split, done per
global batch so the last, short batch is split too. Each rank's loss is its share of the global
batch's loss (its sums over the global counts, all-reduced), scaled by W because DDP averages
gradients: the averaged gradient is the gradient of the global batch's loss, and clipping and
AdamW see the same numbers on every rank."""

from __future__ import annotations

import datetime
import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def writer(self) -> bool:
        """Rank 0 alone writes checkpoints, the registry and the vectors."""
        return self.rank == 0


def ranks() -> Ranks:
    """This process's place in the process group (rank 0 of 1 without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def launched() -> bool:
    """Started by torchrun with more than one process (it sets WORLD_SIZE, RANK, MASTER_ADDR...)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(*, timeout_s: float = 1800.0) -> Ranks:
    """Join the process group torchrun describes in the environment: NCCL when this host has CUDA
    (one GPU per local rank), gloo on CPU. A collective that waits longer than `timeout_s` (a rank
    that died) raises instead of hanging. Without torchrun (WORLD_SIZE unset or 1): nothing."""
    if not launched() or dist.is_initialized():
        return ranks()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return ranks()


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def end_rank(status: int) -> NoReturn:
    """End a process started as a rank: leave the process group, flush what it printed, and exit
    without interpreter shutdown. gloo's worker threads free a finished collective's tensors after
    the caller's wait has returned, and freeing a tensor Python has held takes the GIL; a thread
    that asks for it while the interpreter shuts down aborts the whole process (SIGABRT, "terminate
    called without an active exception"), which CI saw end a two-rank training run. Freeing the
    process group first would join those threads, but after DDP training references to it remain
    that Python's collector does not see (measured: 12 against 2 without DDP), so its threads
    outlive destroy_process_group. Call it last, with everything the rank writes closed."""
    close()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to keep
            pass
    os._exit(status)


def device_choose() -> torch.device:
    """This rank's device: its own GPU (cuda:LOCAL_RANK) when there is CUDA, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", ranks().local_rank) if ranks().size > 1 else torch.device("cuda")
    return torch.device("cpu")


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def batch_share(picked: np.ndarray, here: Ranks) -> tuple[np.ndarray, bool]:
    """This rank's windows of one global batch: every size-th, from its rank (the strided split of
    torch's DistributedSampler). A rank left without any (a last batch shorter than the world) gets
    the batch's first window and False: it must run forward and backward like the others (DDP
    all-reduces every step) but add nothing to the gradient."""
    mine = picked[here.rank::here.size]
    if len(mine):
        return mine, True
    return picked[:1], False


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (the values themselves with one process)."""
    if ranks().size == 1:
        return values
    out = values.to(_collective_device())
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(values.device)


def gather_strided(local: torch.Tensor, total: int) -> torch.Tensor:
    """Undo a strided split: rank r computed rows r, r + size, ...; every rank gets all `total` rows
    in their original order (1-d tensors)."""
    here = ranks()
    if here.size == 1:
        return local
    longest = -(-total // here.size)
    padded = torch.zeros(longest, dtype=local.dtype, device=_collective_device())
    padded[:len(local)] = local.to(padded.device)
    parts = [torch.empty_like(padded) for _ in range(here.size)]
    dist.all_gather(parts, padded)
    out = torch.empty(total, dtype=local.dtype)
    for rank, part in enumerate(parts):
        count = len(range(rank, total, here.size))
        out[rank::here.size] = part[:count].cpu()
    return out


def share(value=None):
    """Rank 0's value on every rank (broadcast; pickled in transit between our own processes,
    never written to disk). How the run service hands its dataset snapshot and configuration to
    the other ranks, so every rank trains on the same read."""
    if ranks().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=_collective_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def barrier() -> None:
    if ranks().size > 1:
        dist.barrier()


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of one rank's epoch when training data-parallel: dropout masks differ between
    ranks (one process draws different masks for the two halves of its batch too) and a run
    resumed at any epoch draws what the uninterrupted run drew."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)
