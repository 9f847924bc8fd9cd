"""Model and training configuration as plain dataclasses (stored with every checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ARCHITECTURES = ("transformer", "gru", "cnn")


@dataclass
class EncoderConfig:
    """One contract for the three families: SASRec-style causal self-attention ("transformer"),
    GRU4Rec-style GRU ("gru") and Caser-style convolutions ("cnn"). The defaults (here and in
    TrainConfig) are the configuration bench/train_ml100k.py measured best on validation (README,
    "MovieLens-100k")."""

    arch: str = "gru"
    n_items: int = 0  # item ids are 1..n_items; 0 is padding
    n_event_types: int = 11  # EventType values 1..10; 0 is padding
    n_gap_buckets: int = 12
    n_price_buckets: int = 12
    max_len: int = 50
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    cnn_horizontal_heights: tuple[int, ...] = (2, 3, 4)
    price_edges: tuple[float, ...] = ()  # the training data's amount buckets (see data.price_edges_fit)
    # Targets per position: the next item only (1), or each of the next k items (dense all-action
    # loss, as in PinnerFormer): a customer's next few items in any order are what their state
    # should point to, which suits catalogues where order within a session is arbitrary.
    future_window: int = 1
    long_term: bool = True  # add the running mean of the sequence to the state (see models.SequenceEncoder)
    # Auxiliary heads: the next event's type and amount bucket, weighted against the item loss.
    # They make the state carry funnel and spending behaviour (what segments differ in), and they
    # are the only objective where events have no item (CDNOW lists amounts and dates only). On a
    # pure next-item task they slow learning (a cyclic toy shop took > 15 epochs instead of ~10 to
    # leave the popularity plateau at weight 0.1), so the core default is off.
    aux_weight: float = 0.0
    content_dim: int = 0  # width of pretrained item-content vectors added to item embeddings; 0 = none
    # A learned score offset for items already in the visible history (one scalar, 0 at the start):
    # repeat consumption is a property of the shop, not something a 64-d state can remember item by
    # item. MovieLens users never rate a film twice, and the weight learns to push seen films down;
    # a grocery's customers re-buy, and it would learn the opposite (RepeatNet, Ren et al. 2019,
    # models the same choice with a repeat/explore gate). It changes scores, not the embedding.
    repeat_bias: bool = True

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, not {self.arch!r}")
        if self.dim % self.heads:
            raise ValueError("dim must be divisible by heads")
        self.cnn_horizontal_heights = tuple(self.cnn_horizontal_heights)
        self.price_edges = tuple(float(e) for e in self.price_edges)

    def as_dict(self) -> dict:
        return asdict(self)


SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    # Learning rate: linear warm-up over the first `warmup` fraction of all planned steps (epochs ×
    # steps per epoch), then cosine decay to 0 at the last planned epoch ("cosine"), or flat.
    schedule: str = "cosine"
    warmup: float = 0.05
    # AdamW's decoupled decay, on weight matrices and embedding tables (not on biases or norms).
    weight_decay: float = 0.0
    patience: int = 5  # epochs without a better validation NDCG@10 before stopping
    seed: int = 0
    eval_k: int = 10
    # Remove the items a customer already has from the ranking (the product's recommendations do);
    # RecBole's sequential evaluation does not, so a benchmark against it sets this False.
    exclude_seen: bool = True
    # Each epoch, a long history's windows older than the newest are shifted by a random offset, so
    # their boundaries (and each token's context) change from epoch to epoch.
    shift_windows: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")

    def as_dict(self) -> dict:
        return asdict(self)
