"""Sequences from event arrays: per customer, time-ordered item / event-type / time-gap / price
tokens, left-padded to a fixed length, with leave-one-out and time splits. NumPy in, tensors out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Time-gap buckets (seconds since the previous event): 1 = first event, then log-spaced edges.
_GAP_EDGES = np.array([60, 600, 3_600, 6 * 3_600, 86_400, 3 * 86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400, 365 * 86_400])


def gap_buckets(seconds: np.ndarray, first: np.ndarray) -> np.ndarray:
    """0 is padding, 1 a customer's first event, 2… increasing gaps."""
    return np.where(first, 1, 2 + np.searchsorted(_GAP_EDGES, seconds, side="right")).astype("int64")


def price_edges_fit(values: np.ndarray, n_buckets: int) -> np.ndarray:
    """Log-amount quantile edges for `price_buckets`, fitted once on the training data and kept with
    the model so a customer encoded later is bucketed exactly as in training."""
    known = np.isfinite(values) & (values > 0)
    if not known.any():
        return np.zeros(0)
    return np.quantile(np.log1p(values[known]), np.linspace(0, 1, n_buckets - 1)[1:-1])


def price_buckets(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """1 = no amount, 2… quantile buckets of the amount (0 is padding)."""
    out = np.ones(len(values), dtype="int64")
    known = np.isfinite(values) & (values > 0)
    if known.any() and len(edges):
        out[known] = 2 + np.searchsorted(edges, np.log1p(values[known]), side="right")
    elif known.any():
        out[known] = 2
    return out


@dataclass
class Sequences:
    """One row per customer, oldest token first; lengths count real tokens."""

    customers: np.ndarray  # (N,) customer ids as given
    items: list[np.ndarray]  # item index 1..n_items, or 0 for events without an item
    event_types: list[np.ndarray]
    gaps: list[np.ndarray]
    prices: list[np.ndarray]
    times: list[np.ndarray]  # seconds since the epoch
    price_edges: np.ndarray | None = None  # the amount bucketing used (keep it with a model trained on these)


def sequences_build(
    *, customers: np.ndarray, items: np.ndarray, event_types: np.ndarray, times: np.ndarray, values: np.ndarray,
    n_price_buckets: int = 12, price_edges: np.ndarray | None = None,
) -> Sequences:
    """Group flat event arrays (items already mapped to 1..n_items, 0 = none) into per-customer
    sequences ordered by time (stable for ties). Price edges are fitted on these values unless
    given (encoding with a trained model must pass the model's)."""
    order = np.lexsort((times, customers))
    customers, items, event_types, times, values = (a[order] for a in (customers, items, event_types, times, values))
    first = np.r_[True, customers[1:] != customers[:-1]]
    gaps = gap_buckets(np.r_[0, np.diff(times)], first)
    values = values.astype("float64")
    edges = price_edges_fit(values, n_price_buckets) if price_edges is None else np.asarray(price_edges, dtype="float64")
    prices = price_buckets(values, edges)
    starts = np.flatnonzero(first)
    bounds = list(zip(starts, np.r_[starts[1:], len(customers)], strict=True))
    return Sequences(
        customers=customers[starts],
        items=[items[a:b] for a, b in bounds],
        event_types=[event_types[a:b].astype("int64") for a, b in bounds],
        gaps=[gaps[a:b] for a, b in bounds],
        prices=[prices[a:b] for a, b in bounds],
        times=[times[a:b] for a, b in bounds],
        price_edges=edges,
    )


def _left_pad(rows: list[np.ndarray], length: int) -> torch.Tensor:
    out = np.zeros((len(rows), length), dtype="int64")
    for i, row in enumerate(rows):
        tail = row[-length:]
        if len(tail):
            out[i, length - len(tail):] = tail
    return torch.from_numpy(out)


def batch_of(seqs: Sequences, rows: np.ndarray, max_len: int, cut: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Tensors (B, max_len) of the chosen customers' sequences, each truncated to its first
    `cut[i]` tokens when given (what the model may see)."""
    def take(field):
        values = getattr(seqs, field)
        return [values[r][: (cut[i] if cut is not None else None)] for i, r in enumerate(rows)]

    return {name: _left_pad(take(name), max_len) for name in ("items", "event_types", "gaps", "prices")}


def _aligned(values: np.ndarray, end: int, before: int, after: int, limit: int) -> np.ndarray:
    """values[end − before : end + after] as an array of exactly before + after entries, 0 where the
    index falls outside [0, limit) (before the first token, or past what training may see)."""
    out = np.zeros(before + after, dtype="int64")
    lo, hi = max(end - before, 0), min(end + after, limit, len(values))
    if hi > lo:
        out[lo - (end - before): hi - (end - before)] = values[lo:hi]
    return out


def training_batch(seqs: Sequences, rows: np.ndarray, ends: np.ndarray, limits: np.ndarray, max_len: int,
                   window: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Inputs and targets of training windows, the usual convention (SASRec, nanoGPT): take the
    tokens [end − max_len, end + window) of each customer, feed the first max_len, and give every
    input position the tokens after it as targets, so the newest input slot (the one inference
    reads) has a target too. Tokens at or past `limits[i]` (the customer's validation item, say)
    are never read.

    Inputs: (B, max_len) per field, left-padded. Targets: "items" (B, max_len, window), the items of
    each of the next `window` tokens (0 = none); "event_types" and "prices" (B, max_len), the next
    token's (the auxiliary heads' targets). Padded input positions get no target."""
    ahead = max(window, 1)
    fields = ("items", "event_types", "gaps", "prices")
    full = {
        name: torch.from_numpy(np.stack([
            _aligned(getattr(seqs, name)[r], int(e), max_len, ahead, int(c)) for r, e, c in zip(rows, ends, limits, strict=True)
        ]) if len(rows) else np.zeros((0, max_len + ahead), dtype="int64"))
        for name in fields
    }
    inputs = {name: full[name][:, :max_len] for name in fields}
    real = inputs["event_types"] > 0  # (B, L)
    items = full["items"][:, 1:].unfold(1, window, 1)[:, :max_len] if window > 1 else full["items"][:, 1:max_len + 1, None]
    targets = {
        "items": items * real.unsqueeze(-1),  # (B, L, window)
        "event_types": full["event_types"][:, 1:max_len + 1] * real,
        "prices": full["prices"][:, 1:max_len + 1] * real,
    }
    return inputs, targets


@dataclass
class LeaveOneOut:
    """Per customer with ≥ 3 item tokens: train on all but the last two item tokens, validate on
    the second-last, test on the last (the standard sequential-recommendation protocol)."""

    rows: np.ndarray  # customers in the split
    valid_cut: np.ndarray  # tokens visible when predicting the validation item
    valid_item: np.ndarray
    test_cut: np.ndarray
    test_item: np.ndarray


def leave_one_out(seqs: Sequences) -> LeaveOneOut:
    rows, vcut, vitem, tcut, titem = [], [], [], [], []
    for r, items in enumerate(seqs.items):
        with_item = np.flatnonzero(items > 0)
        if len(with_item) < 3:
            continue
        last, second = with_item[-1], with_item[-2]
        rows.append(r)
        vcut.append(second)
        vitem.append(items[second])
        tcut.append(last)
        titem.append(items[last])
    as_array = lambda v: np.asarray(v, dtype="int64")  # noqa: E731
    return LeaveOneOut(as_array(rows), as_array(vcut), as_array(vitem), as_array(tcut), as_array(titem))


def seen_items(seqs: Sequences, rows: np.ndarray, cut: np.ndarray) -> list[np.ndarray]:
    """Items each customer had interacted with before the cut (excluded from ranking)."""
    return [np.unique(seqs.items[r][:c][seqs.items[r][:c] > 0]) for r, c in zip(rows, cut, strict=True)]


def time_split(seqs: Sequences, at: float, *, valid_days: float = 0.0) -> LeaveOneOut:
    """A global time split in the LeaveOneOut shape: customers with an item before `at` and one at
    or after it are tested on their first item at or after `at`, seeing only what came before;
    their validation item is the last item before `at − valid_days` (when there is one), so model
    selection never looks past the split. Unlike leave-one-out, no customer's future leaks into
    another customer's training."""
    valid_at = at - valid_days * 86_400
    rows, vcut, vitem, tcut, titem = [], [], [], [], []
    for r, (items, times) in enumerate(zip(seqs.items, seqs.times, strict=True)):
        with_item = np.flatnonzero(items > 0)
        before_valid = with_item[times[with_item] < valid_at]
        after = with_item[times[with_item] >= at]
        if len(before_valid) < 2 or not len(after):
            continue
        rows.append(r)
        vcut.append(before_valid[-1])
        vitem.append(items[before_valid[-1]])
        tcut.append(after[0])
        titem.append(items[after[0]])
    as_array = lambda v: np.asarray(v, dtype="int64")  # noqa: E731
    return LeaveOneOut(as_array(rows), as_array(vcut), as_array(vitem), as_array(tcut), as_array(titem))
