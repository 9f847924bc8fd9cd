"""Reference recommenders computed in the same run as the neural models: most popular items, and
item-kNN (cosine similarity of item co-occurrence in customers' training histories)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def popularity_scores(train_items: list[np.ndarray], n_items: int, batch: int) -> torch.Tensor:
    counts = np.bincount(np.concatenate([i[i > 0] for i in train_items] or [np.zeros(0, "int64")]), minlength=n_items + 1)
    return torch.from_numpy(counts.astype("float32")).expand(batch, -1)


class ItemKNN:
    """score(u, j) = Σ_{i ∈ history(u)} cos(i, j), cosine over the customer × item incidence
    matrix, keeping each item's `neighbours` most similar items (Sarwar et al. 2001)."""

    def __init__(self, train_items: list[np.ndarray], n_items: int, neighbours: int = 100):
        rows = np.concatenate([np.full(len(np.unique(i[i > 0])), u) for u, i in enumerate(train_items)] or [np.zeros(0)])
        cols = np.concatenate([np.unique(i[i > 0]) for i in train_items] or [np.zeros(0)])
        incidence = sp.csr_matrix((np.ones(len(rows), "float32"), (rows, cols)), shape=(len(train_items), n_items + 1))
        norms = np.sqrt(np.asarray(incidence.multiply(incidence).sum(axis=0))).ravel()
        norms[norms == 0] = 1.0
        co = (incidence.T @ incidence).toarray() / np.outer(norms, norms)
        np.fill_diagonal(co, 0.0)
        if neighbours < n_items:
            cutoff = -np.partition(-co, neighbours, axis=1)[:, neighbours][:, None]
            co[co < cutoff] = 0.0
        self.similarity = co.astype("float32")
        self.n_items = n_items

    def scores(self, histories: list[np.ndarray]) -> torch.Tensor:
        out = np.zeros((len(histories), self.n_items + 1), dtype="float32")
        for row, items in enumerate(histories):
            items = np.unique(items[items > 0])
            if len(items):
                out[row] = self.similarity[items].sum(axis=0)
        return torch.from_numpy(out)
