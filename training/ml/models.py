"""Sequence encoders of customers' behaviour: one contract, three families.

Each token is the sum of embeddings of its item (0 = none, as in CDNOW, where only event type,
amount and timing exist), event type, time-gap bucket, price bucket and position. An encoder
turns the (B, L) token sequence into states (B, L, D); the last state, L2-normalised, is the
customer's embedding. Training is next-item prediction with full softmax over the item table
(tied with the input item embeddings), as in SASRec (Kang & McAuley 2018), GRU4Rec (Hidasi et al.
2016) and Caser (Tang & Wang 2018).

Contract (after RecBole): calculate_loss(batch, targets) → scalar; full_sort_predict(batch) →
(B, n_items + 1) scores; user_embedding(batch) → (B, D).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from training.ml.config import EncoderConfig


class _Tokens(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.items = nn.Embedding(config.n_items + 1, config.dim, padding_idx=0)
        self.event_types = nn.Embedding(config.n_event_types, config.dim, padding_idx=0)
        self.gaps = nn.Embedding(config.n_gap_buckets, config.dim, padding_idx=0)
        self.prices = nn.Embedding(config.n_price_buckets, config.dim, padding_idx=0)
        self.positions = nn.Embedding(config.max_len, config.dim)
        self.norm = nn.LayerNorm(config.dim)
        self.dropout = nn.Dropout(config.dropout)
        nn.init.normal_(self.items.weight, std=0.02)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch["items"]  # (B, L)
        positions = torch.arange(items.shape[1], device=items.device).expand_as(items)
        tokens = (
            self.items(items) + self.event_types(batch["event_types"]) + self.gaps(batch["gaps"])
            + self.prices(batch["prices"]) + self.positions(positions)
        )
        return self.dropout(self.norm(tokens))  # (B, L, D)


class SequenceEncoder(nn.Module, abc.ABC):
    """Base: token embedding, an encoder body (subclasses), the shared prediction contract."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.tokens = _Tokens(config)

    @abc.abstractmethod
    def encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, L, D) → (B, L, D)
        """The family's body: token embeddings and the real-token mask in, one state per position out."""

    def states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["event_types"] > 0  # (B, L) real tokens (left-padded)
        return self.encode(self.tokens(batch), mask)

    def user_embedding(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.states(batch)[:, -1, :], dim=-1)  # last position holds the newest token

    def full_sort_predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.states(batch)[:, -1, :] @ self.tokens.items.weight.T  # (B, n_items + 1)

    def calculate_loss(self, batch: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the next item at every position that has one (targets 0 are skipped)."""
        states = self.states(batch)  # (B, L, D)
        keep = targets > 0
        if not keep.any():
            return states.sum() * 0.0
        logits = states[keep] @ self.tokens.items.weight.T  # (T, n_items + 1)
        return F.cross_entropy(logits.float(), targets[keep])


class TransformerEncoder(SequenceEncoder):
    """SASRec: causal self-attention, each position sees itself and the past only."""

    def __init__(self, config: EncoderConfig):
        super().__init__(config)
        layer = nn.TransformerEncoderLayer(
            config.dim, config.heads, dim_feedforward=4 * config.dim, dropout=config.dropout,
            batch_first=True, norm_first=True, activation="gelu",
        )
        self.body = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.dim)

    def encode(self, tokens, mask):
        batch, length = mask.shape
        idx = torch.arange(length, device=tokens.device)
        future = idx[None, :] > idx[:, None]  # (L, L): key after query
        padded_key = ~mask[:, None, :]  # (B, 1, L)
        # A query may see a real key at or before itself; a padded query sees only itself, so no
        # row is all -inf (which would put NaN into every later layer).
        blocked = future[None] | (padded_key & ~torch.eye(length, dtype=torch.bool, device=tokens.device)[None])
        blocked = blocked.repeat_interleave(self.config.heads, dim=0)  # (B·heads, L, L)
        out = self.body(tokens, mask=blocked)
        return self.final_norm(out) * mask.unsqueeze(-1)


class GRUEncoder(SequenceEncoder):
    """GRU4Rec: a recurrent state carried through the sequence."""

    def __init__(self, config: EncoderConfig):
        super().__init__(config)
        self.body = nn.GRU(config.dim, config.dim, num_layers=config.layers, batch_first=True,
                           dropout=config.dropout if config.layers > 1 else 0.0)
        self.out = nn.Linear(config.dim, config.dim)

    def encode(self, tokens, mask):
        out, _ = self.body(tokens * mask.unsqueeze(-1))  # left padding: zeros before the first token
        return self.out(out) * mask.unsqueeze(-1)


class CNNEncoder(SequenceEncoder):
    """Caser-style: horizontal convolutions over the last h tokens (union-level patterns) and a
    vertical convolution (point-level), applied causally so every position has a state."""

    def __init__(self, config: EncoderConfig):
        super().__init__(config)
        self.horizontal = nn.ModuleList(
            nn.Conv1d(config.dim, config.dim, kernel_size=h) for h in config.cnn_horizontal_heights
        )
        self.vertical = nn.Conv1d(config.dim, config.dim, kernel_size=config.cnn_horizontal_heights[-1], groups=config.dim)
        self.out = nn.Sequential(
            nn.Linear(config.dim * (len(self.horizontal) + 1), config.dim), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.dim, config.dim),
        )

    def encode(self, tokens, mask):
        x = (tokens * mask.unsqueeze(-1)).transpose(1, 2)  # (B, D, L)
        features = []
        for conv in [*self.horizontal, self.vertical]:
            pad = conv.kernel_size[0] - 1
            features.append(F.relu(conv(F.pad(x, (pad, 0)))))  # causal: position t sees t-h+1..t
        combined = torch.cat(features, dim=1).transpose(1, 2)  # (B, L, D·(H+1))
        return self.out(combined) * mask.unsqueeze(-1)


def encoder_build(config: EncoderConfig) -> SequenceEncoder:
    return {"transformer": TransformerEncoder, "gru": GRUEncoder, "cnn": CNNEncoder}[config.arch](config)
