"""Full-ranking metrics over all items (no sampled negatives)."""

from __future__ import annotations

import numpy as np
import torch


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: list[np.ndarray] | None = None) -> torch.Tensor:
    """1-based rank of each target among all items. scores: (B, n_items + 1) with column 0 the
    padding id (never ranked); items in `exclude[i]` (already seen, except the target) are not
    ranked either. Ties count against the target (pessimistic)."""
    scores = scores.float().clone()
    scores[:, 0] = -torch.inf
    if exclude is not None:
        for i, seen in enumerate(exclude):
            if len(seen):
                seen = torch.as_tensor(seen[seen != int(targets[i])], dtype=torch.long, device=scores.device)
                scores[i, seen] = -torch.inf
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    target_scores = scores.gather(1, targets.view(-1, 1))
    return (scores >= target_scores).sum(dim=1)


def ranking_metrics(ranks: torch.Tensor, k: int = 10) -> dict[str, float]:
    ranks = ranks.double()
    hit = ranks <= k
    return {
        f"hr@{k}": float(hit.double().mean()),
        f"ndcg@{k}": float(torch.where(hit, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks)).mean()),
        "mrr": float((1.0 / ranks).mean()),
    }
