"""The training loop: seeded, device chosen once (CUDA with bf16 autocast for training when
present; evaluation scores in fp32), AdamW with warm-up and cosine decay, a checkpoint every epoch
(plain dicts, loaded with weights_only=True), resume from the last one after a crash, early
stopping on validation NDCG@10, full-ranking evaluation. The same loop trains data-parallel when
started by torchrun (distributed.py: DDP, each rank a strided share of every global batch,
evaluation split across the ranks, rank 0 alone writing checkpoints)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from training.ml import distributed
from training.ml.config import EncoderConfig, TrainConfig
from training.ml.data import (
    LeaveOneOut,
    Sequences,
    batch_of,
    seen_items,
    training_batch,
)
from training.ml.metrics import ranking_metrics, target_ranks
from training.ml.models import SequenceEncoder, encoder_build

LAST, BEST = "last.pt", "best.pt"


def device_choose() -> torch.device:
    return distributed.device_choose()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    model: SequenceEncoder
    history: list[dict] = field(default_factory=list)  # per epoch: loss, validation metrics, seconds
    best_epoch: int = -1
    best_valid: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    device: str = "cpu"
    resumed_from_epoch: int | None = None
    trained_tokens: int = 0  # tokens the last epoch's windows could read (refit: its training manifest)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _training_windows(seqs: Sequences, split: LeaveOneOut, max_len: int, *, upto: str = "valid",
                      before: float | None = None, shift_windows: bool = False,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, end, limit) per training window (see data.training_batch): the window feeds the
    tokens [end − max_len, end) and predicts from each of them the tokens after it, never reading
    at or past `limit`, the customer's validation item (test item with upto="test"; customers
    outside the split train on their whole sequence).

    The newest window ends one token before the limit, so its last slot, the one inference reads,
    predicts the newest training item, with as much context as evaluation gives. A history longer
    than the window continues in older windows, max_len apart, so every input position is trained
    once per epoch; taking only the newest window (as the original SASRec code does) would throw
    away most of a long history. With `shift_windows`, the older windows move by a random offset in
    [0, max_len) per customer (they overlap the newest by that much), so their boundaries differ
    from epoch to epoch."""
    limit = np.array([len(i) for i in seqs.items], dtype="int64")
    if upto != "all":  # "all": every event, the validation and test items too (the product's refit)
        limit[split.rows] = split.valid_cut if upto == "valid" else split.test_cut
    if before is not None:  # a time split: nobody trains on what happened after it
        limit = np.minimum(limit, [int(np.searchsorted(t, before, side="left")) for t in seqs.times])
    rows, ends = [], []
    for row in np.flatnonzero(limit >= 2):
        newest = int(limit[row]) - 1
        shift = int(np.random.randint(max_len)) if shift_windows else 0  # the global state: checkpointed
        mine = [newest, *range(newest - max_len + shift, 0, -max_len)]
        rows += [row] * len(mine)
        ends += mine
    rows = np.asarray(rows, dtype="int64")
    return rows, np.asarray(ends, dtype="int64"), limit[rows]


def _withhold(tokens: torch.Tensor, withheld: torch.Tensor | None) -> torch.Tensor:
    """Item ids without the withheld items: their tokens stay (event type, gap, price) but carry no
    item, so the model never sees them and they are never a target."""
    if withheld is None:
        return tokens
    return torch.where(torch.isin(tokens, withheld), torch.zeros_like(tokens), tokens)


def _model_prepare(model_config: EncoderConfig, item_content, withheld_items, device):
    model = encoder_build(model_config)
    if item_content is not None:
        model.content_set(torch.as_tensor(item_content, dtype=torch.float32))
    model = model.to(device)
    withheld = torch.as_tensor(withheld_items, dtype=torch.long, device=device) if withheld_items is not None else None
    if withheld is not None:  # as if added to the catalogue after training: no id vector at all
        with torch.no_grad():
            model.tokens.items.weight[withheld] = 0.0
    return model, withheld


class _LossOf(torch.nn.Module):
    """The encoder's training loss as a module's forward: DDP synchronises gradients for what runs
    through forward, and the encoder's forward is inference (user states)."""

    def __init__(self, encoder: SequenceEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, inputs, targets, withheld, denominators):
        return self.encoder.calculate_loss(inputs, targets, withheld, denominators=denominators)


def _parallel(model: SequenceEncoder, device: torch.device) -> torch.nn.Module | None:
    """The model wrapped in DistributedDataParallel when this process is one rank of several
    (DDP broadcasts rank 0's weights, so every rank starts from the same ones), else None. Unused
    parameters are allowed: a rank whose share has no next-event target skips the auxiliary heads."""
    if distributed.ranks().size == 1:
        return None
    return torch.nn.parallel.DistributedDataParallel(
        _LossOf(model), device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


def _optimizer(model: SequenceEncoder, settings: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and embedding tables only (decaying a bias or a norm's
    gain pulls it towards 0, which is no prior anyone holds)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr)


def learning_rate(settings: TrainConfig, progress: float) -> float:
    """The rate at `progress` (epochs done, fractional, over planned epochs, in [0, 1]): linear
    warm-up over the first `warmup`, then cosine decay to 0 (or flat). A function of progress
    alone, so a resumed run continues exactly where the crashed one was."""
    if settings.warmup > 0 and progress < settings.warmup:
        return settings.lr * max(progress / settings.warmup, 0.01)
    if settings.schedule == "constant":
        return settings.lr
    decayed = (progress - settings.warmup) / max(1.0 - settings.warmup, 1e-9)
    return settings.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(decayed, 0.0), 1.0)))


def _epoch_train(model, optimizer, settings: TrainConfig, epoch: int, seqs: Sequences, windows, device, withheld,
                 parallel: torch.nn.Module | None = None) -> float:
    """One pass over the training windows in a random order; the mean batch loss. With `parallel`
    (the DDP-wrapped loss), this rank trains on its share of every global batch of
    `settings.batch_size` windows, and the loss returned is the global batches' (distributed.py)."""
    model.train()
    rows, ends, limits = windows
    order = np.random.permutation(len(rows))  # the same on every rank: the NumPy state is shared
    starts = range(0, len(order), settings.batch_size)
    here = distributed.ranks()
    if parallel is not None:
        torch.manual_seed(distributed.epoch_seed(settings.seed, epoch, here.rank))
    losses = []
    for step, start in enumerate(starts):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, (epoch + step / len(starts)) / max(settings.epochs, 1))
        picked = order[start:start + settings.batch_size]
        if parallel is not None:
            picked, counted = distributed.batch_share(picked, here)
        inputs, targets = training_batch(seqs, rows[picked], ends[picked], limits[picked], model.config.max_len,
                                         model.config.future_window)
        inputs, targets = _to(inputs, device), _to(targets, device)
        inputs["items"], targets["items"] = _withhold(inputs["items"], withheld), _withhold(targets["items"], withheld)
        if parallel is None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model.calculate_loss(inputs, targets, withheld)
            reported = loss
        else:
            # the global batch's target counts, so each rank's loss is its part of the global mean
            counts = torch.stack([(targets["items"] > 0).sum(), (targets["event_types"] > 0).sum()]).float() * counted
            totals = distributed.all_reduce_sum(counts).clamp(min=1.0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                reported = parallel(inputs, targets, withheld, (totals[0], totals[1])) * float(counted)
            loss = reported * here.size  # DDP averages the ranks' gradients; this makes it their sum
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append(float(reported.detach()))
    if parallel is not None and losses:  # each global batch's loss: the ranks' parts added
        losses = distributed.all_reduce_sum(torch.tensor(losses, dtype=torch.float64)).tolist()
    return float(np.mean(losses)) if losses else 0.0


@torch.no_grad()
def evaluate_ranks(model: SequenceEncoder, seqs: Sequences, rows, cut, targets, *, device, batch_size: int = 512,
                   exclude_seen: bool = True) -> torch.Tensor:
    """Full-ranking rank of every target, one per row; the customer's earlier items are left out
    of the ranking when `exclude_seen`. Scored in fp32 even on GPU: under bf16 (3 significant
    digits) many items tie, and a pessimistic rank counts every tie against the target.

    Data-parallel, every rank must call it: each ranks every size-th row and all get all ranks,
    in row order (the same tensor one process computes)."""
    here = distributed.ranks()
    if here.size > 1:
        mine = np.arange(here.rank, len(rows), here.size)
        local = _evaluate_ranks_here(model, seqs, np.asarray(rows)[mine], np.asarray(cut)[mine],
                                     np.asarray(targets)[mine], device=device, batch_size=batch_size,
                                     exclude_seen=exclude_seen)
        return distributed.gather_strided(local.long(), len(rows))
    return _evaluate_ranks_here(model, seqs, rows, cut, targets, device=device, batch_size=batch_size,
                                exclude_seen=exclude_seen)


def _evaluate_ranks_here(model, seqs, rows, cut, targets, *, device, batch_size, exclude_seen) -> torch.Tensor:
    model.eval()
    ranks = []
    for start in range(0, len(rows), batch_size):
        part = slice(start, start + batch_size)
        batch = _to(batch_of(seqs, rows[part], model.config.max_len, cut[part]), device)
        scores = model.full_sort_predict(batch).float()
        exclude = seen_items(seqs, rows[part], cut[part]) if exclude_seen else None
        ranks.append(target_ranks(scores, torch.as_tensor(targets[part], device=device), exclude).cpu())
    return torch.cat(ranks) if ranks else torch.zeros(0)


def evaluate(model: SequenceEncoder, seqs: Sequences, rows, cut, targets, *, k: int, device, batch_size: int = 512,
             exclude_seen: bool = True) -> dict:
    return ranking_metrics(evaluate_ranks(model, seqs, rows, cut, targets, device=device, batch_size=batch_size,
                                          exclude_seen=exclude_seen), k=k)


def train(
    *, seqs: Sequences, split: LeaveOneOut, model_config: EncoderConfig, train_config: TrainConfig,
    checkpoint_dir: Path | None = None, on_epoch: Callable[[dict], None] | None = None,
    device: torch.device | None = None, crash_after_epoch: int | None = None,
    item_content: np.ndarray | None = None, withheld_items: np.ndarray | None = None, train_before: float | None = None,
    inspect: Callable[[SequenceEncoder, dict], None] | None = None,
) -> TrainResult:
    """Train until the epochs run out or validation NDCG@k has not improved for `patience`
    epochs; the best epoch's weights are kept and evaluated on the test items.

    `item_content` ((n_items + 1, content_dim), row 0 padding) feeds an encoder configured with
    `content_dim`. `withheld_items` are removed from training input, targets and the softmax, and
    their id vectors are zero (but they are ranked in evaluation): how a benchmark makes items as
    cold as ones added to the catalogue after training. `crash_after_epoch` raises after that
    epoch's checkpoint is written: how tests simulate a worker dying mid-run. `train_before` (seconds
    since the epoch) keeps every customer's training input before that time, as a time split needs.
    `inspect(model, record)` sees the model after every epoch (a benchmark scores a second
    protocol with it; it must not train or draw random numbers).

    Under torchrun (several ranks) every rank calls this with the same data and configuration:
    rank 0 alone reads and writes the checkpoints (the other ranks get its state by broadcast, so
    a checkpoint of any world size resumes under any other) and alone calls `on_epoch`; every
    rank calls `inspect` (evaluation is collective) and returns the same result."""
    device = device or device_choose()
    seed_everything(train_config.seed)
    model, withheld = _model_prepare(model_config, item_content, withheld_items, device)
    optimizer = _optimizer(model, train_config)
    result = TrainResult(model=model, device=str(device))
    start_epoch, best_score, best_state, stale = 0, -float("inf"), None, 0
    here = distributed.ranks()
    state = None
    if checkpoint_dir is not None and here.writer and (checkpoint_dir / LAST).exists():
        on = device if here.size == 1 else "cpu"
        state = torch.load(checkpoint_dir / LAST, map_location=on, weights_only=True)
        state["best"] = torch.load(checkpoint_dir / BEST, map_location=on, weights_only=True)["state_dict"]
    state = distributed.share(state)
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        result.history = state["history"]
        start_epoch, best_score, stale = state["epoch"] + 1, state["best_score"], state["stale"]
        result.best_epoch = state["best_epoch"]
        best_state = state["best"]
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(_numpy_state(state["numpy_rng"]))
        result.resumed_from_epoch = state["epoch"]
    parallel = _parallel(model, device)  # after loading: the ranks start from the checkpoint's weights
    k, exclude = train_config.eval_k, train_config.exclude_seen
    for epoch in range(start_epoch, train_config.epochs):
        if stale >= train_config.patience:
            break
        began = time.perf_counter()
        windows = _training_windows(seqs, split, model_config.max_len, before=train_before,
                                    shift_windows=train_config.shift_windows)
        mean_loss = _epoch_train(model, optimizer, train_config, epoch, seqs, windows, device, withheld, parallel)
        has_split = len(split.rows) > 0
        valid = evaluate(model, seqs, split.rows, split.valid_cut, split.valid_item, k=k, device=device,
                         exclude_seen=exclude) if has_split else {}
        record = {"epoch": epoch, "loss": mean_loss, "valid": valid, "seconds": round(time.perf_counter() - began, 3),
                  **({"ranks": here.size} if here.size > 1 else {})}  # data-parallel: how many processes
        result.history.append(record)
        # Without items (CDNOW: amounts and dates only) there is nothing to rank: the auxiliary
        # heads' training loss is what stops early.
        score = valid[f"ndcg@{k}"] if has_split else -mean_loss
        if score > best_score:
            best_score, stale, result.best_epoch = score, 0, epoch
            best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        else:
            stale += 1
        if checkpoint_dir is not None and here.writer:
            _checkpoint(checkpoint_dir, model, optimizer, model_config, train_config, epoch, best_score, stale,
                        result, best_state)
        distributed.barrier()  # no rank runs ahead of a checkpoint that is not written yet
        if on_epoch and here.writer:
            on_epoch(record)
        if inspect:
            inspect(model, record)
        if crash_after_epoch is not None and epoch == crash_after_epoch:
            raise RuntimeError(f"simulated crash after epoch {epoch}")
    if best_state is not None:
        model.load_state_dict(best_state)
    result.best_valid = next((h["valid"] for h in result.history if h["epoch"] == result.best_epoch), {})
    if len(split.rows):
        result.test = evaluate(model, seqs, split.rows, split.test_cut, split.test_item, k=k, device=device,
                               exclude_seen=exclude)
    return result


def refit(
    *, seqs: Sequences, split: LeaveOneOut, model_config: EncoderConfig, train_config: TrainConfig, epochs: int,
    device: torch.device | None = None, item_content: np.ndarray | None = None, withheld_items: np.ndarray | None = None,
    upto: str = "test",
) -> TrainResult:
    """Train a fresh model for a fixed number of epochs (the count early stopping chose) on
    everything but the test items, validation items included, and evaluate it on the test items:
    the usual last step once model selection is done, and what a production retrain does with the
    newest interactions. `upto="all"` trains on every event, the test items too (what the product
    activates); there is nothing held out to evaluate then."""
    device = device or device_choose()
    seed_everything(train_config.seed)
    model, withheld = _model_prepare(model_config, item_content, withheld_items, device)
    optimizer = _optimizer(model, train_config)
    parallel = _parallel(model, device)
    # the schedule of a run planned for `epochs` epochs (the count early stopping chose)
    settings = replace(train_config, epochs=epochs)
    result = TrainResult(model=model, device=str(device))
    for epoch in range(epochs):
        began = time.perf_counter()
        windows = _training_windows(seqs, split, model_config.max_len, upto=upto, shift_windows=settings.shift_windows)
        rows, _, limits = windows
        result.trained_tokens = int(limits[np.unique(rows, return_index=True)[1]].sum())
        mean_loss = _epoch_train(model, optimizer, settings, epoch, seqs, windows, device, withheld, parallel)
        result.history.append({"epoch": epoch, "loss": mean_loss, "valid": {},
                               "seconds": round(time.perf_counter() - began, 3)})
    result.best_epoch = epochs - 1
    if len(split.rows) and upto != "all":
        result.test = evaluate(model, seqs, split.rows, split.test_cut, split.test_item, k=train_config.eval_k, device=device,
                               exclude_seen=train_config.exclude_seen)
    return result


def _numpy_state(saved: dict) -> tuple:
    return (saved["kind"], np.asarray(saved["keys"], dtype=np.uint32), saved["pos"], saved["has_gauss"], saved["cached"])


def _checkpoint(directory: Path, model, optimizer, model_config, train_config, epoch, best_score, stale, result, best_state):
    directory.mkdir(parents=True, exist_ok=True)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "model_args": model_config.as_dict(), "train_args": train_config.as_dict(),
        "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
        "best_score": best_score, "best_epoch": result.best_epoch, "stale": stale, "history": result.history,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": {"kind": kind, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "cached": cached},
    }
    torch.save({"model_args": model_config.as_dict(), "state_dict": best_state}, directory / (BEST + ".tmp"))
    (directory / (BEST + ".tmp")).replace(directory / BEST)
    torch.save(state, directory / (LAST + ".tmp"))
    (directory / (LAST + ".tmp")).replace(directory / LAST)  # atomic: a crash never leaves half a file


def model_save(model: SequenceEncoder, model_config: EncoderConfig, path: Path) -> None:
    """A trained encoder as a best.pt-shaped checkpoint (what model_load reads), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_args": model_config.as_dict(), "state_dict": model.state_dict()}, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def model_load(path: Path, device: torch.device | None = None) -> SequenceEncoder:
    """A trained encoder from a best.pt checkpoint (plain dict, weights only)."""
    state = torch.load(path, map_location=device or "cpu", weights_only=True)
    # a checkpoint from before the repeat offset existed has no such weight: build it without one
    model = encoder_build(EncoderConfig(**{"repeat_bias": False, **state["model_args"]}))
    model.load_state_dict(state["state_dict"])
    return model.eval()
