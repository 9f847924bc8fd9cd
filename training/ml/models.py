"""Sequence encoders of customers' behaviour: one contract, three families.

Each token is the sum of embeddings of its item (0 = none, as in CDNOW, where only event type,
amount and timing exist), event type, time-gap bucket, price bucket and position. An encoder
turns the (B, L) token sequence into states (B, L, D); the last state, L2-normalised, is the
customer's embedding. Training is next-item prediction with full softmax over the item table
(tied with the input item embeddings), as in SASRec (Kang & McAuley 2018), GRU4Rec (Hidasi et al.
2016) and Caser (Tang & Wang 2018).

Item content: when the config has `content_dim`, each item's vector is its id embedding plus a
learned projection of a fixed pretrained text vector of its title and categories (Hou et al.'s
UniSRec and the "ID + text" SASRec variants do the same), so an item nobody has bought yet is
placed among items described alike.

Contract (after RecBole): calculate_loss(batch, targets) → scalar, targets as data.training_batch
makes them (every input position, the newest included, predicts the tokens after it);
full_sort_predict(batch) → (B, n_items + 1) scores from the newest position; user_embedding(batch)
→ (B, D).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from training.ml.config import EncoderConfig

INIT_STD = 0.02  # initial scale of every embedding table


def running_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D): at each position, the mean of the real tokens up to and including it."""
    seen = mask.float().cumsum(dim=1).clamp(min=1.0).unsqueeze(-1)
    return (tokens * mask.unsqueeze(-1)).cumsum(dim=1) / seen


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
        # Every table on one scale (BERT's and RecBole's N(0, 0.02)): with PyTorch's N(0, 1) default
        # for the side tables, the item's identity was a fiftieth of its token at the start. The
        # padding rows are zeroed after drawing (normal_ overwrites them).
        for table in (self.items, self.event_types, self.gaps, self.prices, self.positions):
            nn.init.normal_(table.weight, std=INIT_STD)
            if table.padding_idx is not None:
                with torch.no_grad():
                    table.weight[table.padding_idx].zero_()
        # Pretrained content vectors are data, not parameters: a buffer, saved with the weights.
        self.register_buffer("content", torch.zeros(config.n_items + 1, config.content_dim), persistent=True)
        self.content_projection = nn.Linear(config.content_dim, config.dim, bias=False) if config.content_dim else None

    def item_table(self) -> torch.Tensor:
        """(n_items + 1, D): every item's vector, row 0 (padding) zero."""
        table = self.items.weight
        if self.content_projection is not None:
            table = table + self.content_projection(self.content)
        return table

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch["items"]  # (B, L)
        positions = torch.arange(items.shape[1], device=items.device).expand_as(items)
        item_vectors = F.embedding(items, self.item_table(), padding_idx=0)
        tokens = (
            item_vectors + self.event_types(batch["event_types"]) + self.gaps(batch["gaps"])
            + self.prices(batch["prices"]) + self.positions(positions)
        )
        return self.dropout(self.norm(tokens))  # (B, L, D)


class SequenceEncoder(nn.Module, abc.ABC):
    """Base: token embedding, an encoder body (subclasses), the shared prediction contract."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.tokens = _Tokens(config)
        # Long-term taste: a projection of the running mean of everything seen so far, added to the
        # sequential state (the CNN has it inside). A recurrent or attention state leans on the
        # last few tokens; the mean is what item-kNN sums over, and on MovieLens it is what
        # closed the gap to it.
        self.long_term = nn.Linear(config.dim, config.dim) if config.long_term and config.arch != "cnn" else None
        self.next_event_type = nn.Linear(config.dim, config.n_event_types)
        self.next_price = nn.Linear(config.dim, config.n_price_buckets)
        self.repeat = nn.Parameter(torch.zeros(())) if config.repeat_bias else None

    @abc.abstractmethod
    def encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, L, D) → (B, L, D)
        """The family's body: token embeddings and the real-token mask in, one state per position out."""

    def states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["event_types"] > 0  # (B, L) real tokens (left-padded)
        tokens = self.tokens(batch)
        out = self.encode(tokens, mask)
        if self.long_term is not None:
            out = out + self.long_term(running_mean(tokens, mask)) * mask.unsqueeze(-1)
        return out

    def user_embedding(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(self.states(batch)[:, -1, :], dim=-1)  # last position holds the newest token

    def content_set(self, content: torch.Tensor) -> None:
        """Load the pretrained item-content vectors, (n_items + 1, content_dim), row 0 padding."""
        if self.tokens.content_projection is None:
            raise ValueError("this encoder was configured without item content (content_dim = 0)")
        if tuple(content.shape) != tuple(self.tokens.content.shape):
            raise ValueError(f"content must be {tuple(self.tokens.content.shape)}, not {tuple(content.shape)}")
        self.tokens.content.copy_(content)

    def item_embeddings(self) -> torch.Tensor:
        """(n_items + 1, D): the vectors user states are scored against, as used in training."""
        return self.tokens.item_table()

    def full_sort_predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        scores = self.states(batch)[:, -1, :] @ self.item_embeddings().T  # (B, n_items + 1)
        if self.repeat is not None:
            seen = torch.zeros_like(scores).scatter_(1, batch["items"], 1.0)
            seen[:, 0] = 0.0
            scores = scores + self.repeat * seen
        return scores

    def _seen_offsets(self, logits: torch.Tensor, items: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Add the repeat offset to the logits (T, n_items + 1) of the kept positions for the items
        at or before each position: an index matrix per position (T, L), not a (B, L, n_items)
        mask, so the cost does not grow with the catalogue."""
        length = items.shape[1]
        upto = torch.arange(length, device=items.device)
        visible = upto[None, :] <= upto[:, None]  # (L, L): key at or before query
        index = torch.where(visible[None], items[:, None, :], torch.zeros_like(items[:, None, :]))[keep]  # (T, L)
        offsets = torch.zeros_like(logits).scatter_(1, index, 1.0)
        offsets[:, 0] = 0.0
        return logits + self.repeat * offsets

    def calculate_loss(self, batch: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                       unknown_items: torch.Tensor | None = None,
                       denominators: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Cross-entropy of the target items at every position that has one (targets 0 are
        skipped), plus `aux_weight` × the auxiliary heads' cross-entropy on the next event's type
        and amount bucket. targets (see data.training_batch): "items" (B, L) next items or
        (B, L, k) each of the next k items, every (position, target) pair weighing the same;
        "event_types" and "prices" (B, L) of the next token, needed when `aux_weight` is set.
        `unknown_items` are left out of the softmax: items the model must not learn anything
        about (not even as negatives), as a catalogue item added after training is.

        `denominators` (item targets, next-event targets) replace this batch's own counts in the two
        means: a data-parallel rank passes the global batch's, so the ranks' losses add up to the
        global batch's loss (distributed.py)."""
        items = targets["items"]
        if items.dim() == 2:
            items = items.unsqueeze(-1)
        states = self.states(batch)  # (B, L, D)
        loss = states.sum() * 0.0
        keep = (items > 0).any(dim=-1)
        if keep.any():
            logits = (states[keep] @ self.item_embeddings().T).float()  # (T, n_items + 1)
            if self.repeat is not None:
                logits = self._seen_offsets(logits, batch["items"], keep)
            if unknown_items is not None:
                logits[:, unknown_items] = -torch.inf
            log_p = F.log_softmax(logits, dim=-1)
            picked = items[keep]  # (T, k)
            valid = picked > 0
            loss = loss + (-log_p.gather(1, picked) * valid).sum() / (valid.sum() if denominators is None else denominators[0])
        if self.config.aux_weight:
            next_type, next_price = targets["event_types"], targets["prices"]
            has_next = next_type > 0
            if has_next.any():
                mean = denominators is None
                aux = F.cross_entropy(self.next_event_type(states[has_next]).float(), next_type[has_next],
                                      reduction="mean" if mean else "sum") + F.cross_entropy(
                    self.next_price(states[has_next]).float(), next_price[has_next], reduction="mean" if mean else "sum"
                )
                loss = loss + self.config.aux_weight * (aux if mean else aux / denominators[1])
        return loss


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
        # Normalised like the transformer's output: a GRU state lies in (−1, 1), so its scores
        # against the item table start near-uniform and training crawled (loss 6.8 → 6.6 in 14
        # MovieLens epochs, where the transformer reached 6.1).
        self.out = nn.Sequential(nn.Linear(config.dim, config.dim), nn.LayerNorm(config.dim))

    def encode(self, tokens, mask):
        out, _ = self.body(tokens * mask.unsqueeze(-1))  # left padding: zeros before the first token
        return self.out(out) * mask.unsqueeze(-1)


class CNNEncoder(SequenceEncoder):
    """Caser-style: horizontal convolutions over the last h tokens (union-level patterns) and a
    vertical convolution (point-level), applied causally so every position has a state. Caser
    concatenates a per-user embedding for long-term taste; a user id cannot encode a customer who
    arrives after training, so the running mean of everything seen so far stands in for it."""

    def __init__(self, config: EncoderConfig):
        super().__init__(config)
        self.horizontal = nn.ModuleList(
            nn.Conv1d(config.dim, config.dim, kernel_size=h) for h in config.cnn_horizontal_heights
        )
        self.vertical = nn.Conv1d(config.dim, config.dim, kernel_size=config.cnn_horizontal_heights[-1], groups=config.dim)
        self.out = nn.Sequential(
            nn.Linear(config.dim * (len(self.horizontal) + 2), config.dim), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.dim, config.dim),
        )

    def encode(self, tokens, mask):
        x = (tokens * mask.unsqueeze(-1)).transpose(1, 2)  # (B, D, L)
        features = []
        for conv in [*self.horizontal, self.vertical]:
            pad = conv.kernel_size[0] - 1
            features.append(F.relu(conv(F.pad(x, (pad, 0)))))  # causal: position t sees t-h+1..t
        features.append(running_mean(tokens, mask).transpose(1, 2))  # long-term: mean of tokens up to t
        combined = torch.cat(features, dim=1).transpose(1, 2)  # (B, L, D·(H+1))
        return self.out(combined) * mask.unsqueeze(-1)


def encoder_build(config: EncoderConfig) -> SequenceEncoder:
    return {"transformer": TransformerEncoder, "gru": GRUEncoder, "cnn": CNNEncoder}[config.arch](config)
