"""The pure ML core on tiny seeded data, on CPU, without a database."""

import numpy as np
import pytest
import torch

from training.ml import data
from training.ml.baselines import ItemKNN, popularity_scores
from training.ml.config import EncoderConfig, TrainConfig
from training.ml.metrics import ranking_metrics, target_ranks
from training.ml.models import encoder_build
from training.ml.trainer import BEST, model_load, train

N_ITEMS = 30


def cyclic_shop(customers: int = 120, length: int = 14, seed: int = 0) -> data.Sequences:
    """Each customer walks the catalogue in steps of +1 from a random start, with a popular item
    (1) sprinkled in: the next item is predictable from the last, not from popularity."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        start = rng.integers(2, N_ITEMS + 1)
        walk = [(start - 2 + s) % (N_ITEMS - 1) + 2 for s in range(length)]
        for t, item in enumerate(walk):
            rows.append((c, item, 1, t * 3600 + c, 10.0))
            if rng.random() < 0.15:
                rows.append((c, 1, 1, t * 3600 + c + 1, 5.0))
    arr = np.array(rows, dtype="float64")
    return data.sequences_build(
        customers=arr[:, 0].astype("int64"), items=arr[:, 1].astype("int64"), event_types=arr[:, 2].astype("int64"),
        times=arr[:, 3], values=arr[:, 4],
    )


def test_sequences_are_time_ordered_with_gap_and_price_buckets():
    seqs = data.sequences_build(
        customers=np.array([7, 7, 3, 7]), items=np.array([2, 1, 5, 0]), event_types=np.array([1, 6, 1, 6]),
        times=np.array([100.0, 50.0, 10.0, 100_000.0]), values=np.array([np.nan, 20.0, np.nan, 30.0]),
    )

    assert seqs.customers.tolist() == [3, 7]
    assert seqs.items[1].tolist() == [1, 2, 0]  # by time; 0 = an event without an item
    assert seqs.gaps[1].tolist()[0] == 1 and seqs.gaps[1][2] > seqs.gaps[1][1]
    assert seqs.prices[1][0] >= 2 and seqs.prices[1][1] == 1  # no amount → bucket 1


def test_leave_one_out_holds_out_the_last_two_items():
    seqs = cyclic_shop(customers=3, length=5)
    split = data.leave_one_out(seqs)

    for i, row in enumerate(split.rows):
        items = seqs.items[row]
        with_item = np.flatnonzero(items > 0)
        assert split.test_item[i] == items[with_item[-1]] and split.valid_item[i] == items[with_item[-2]]
        assert split.valid_cut[i] == with_item[-2]


def test_ranks_and_metrics_by_hand():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.1], [0.0, 0.2, 0.3, 0.8]])
    ranks = target_ranks(scores, torch.tensor([2, 1]), exclude=[np.array([1]), np.array([])])

    assert ranks.tolist() == [1, 3]  # item 1 excluded for the first customer
    metrics = ranking_metrics(ranks, k=2)
    assert metrics["hr@2"] == 0.5
    assert metrics["ndcg@2"] == pytest.approx(0.5)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 3) / 2)


@pytest.mark.parametrize("arch", ["transformer", "gru", "cnn"])
def test_each_architecture_learns_the_sequence_and_beats_popularity(arch, tmp_path):
    seqs = cyclic_shop(customers=300)
    split = data.leave_one_out(seqs)
    config = EncoderConfig(arch=arch, n_items=N_ITEMS, dim=32, layers=1, heads=2, max_len=20, dropout=0.1)

    result = train(seqs=seqs, split=split, model_config=config,
                   train_config=TrainConfig(epochs=15, batch_size=32, lr=1e-2, patience=15, seed=1),
                   checkpoint_dir=tmp_path)

    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.15 and losses[-1] == pytest.approx(min(losses), abs=0.05), losses
    train_items = [seqs.items[r][: c] for r, c in zip(split.rows, split.test_cut, strict=True)]
    popular = target_ranks(popularity_scores(train_items, N_ITEMS, len(split.rows)), torch.as_tensor(split.test_item),
                           data.seen_items(seqs, split.rows, split.test_cut))
    assert result.test["ndcg@10"] > ranking_metrics(popular)["ndcg@10"] + 0.2
    embedding = model_load(tmp_path / BEST).user_embedding(data.batch_of(seqs, split.rows[:4], 20))
    assert embedding.shape == (4, 32)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(4), atol=1e-5)


def test_training_resumes_from_the_last_checkpoint_after_a_crash(tmp_path):
    seqs = cyclic_shop(customers=60)
    split = data.leave_one_out(seqs)
    config = EncoderConfig(arch="gru", n_items=N_ITEMS, dim=16, layers=1, max_len=16, dropout=0.0)
    settings = TrainConfig(epochs=4, batch_size=16, lr=5e-3, patience=10, seed=3)

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(seqs=seqs, split=split, model_config=config, train_config=settings, checkpoint_dir=tmp_path / "a",
              crash_after_epoch=1)
    resumed = train(seqs=seqs, split=split, model_config=config, train_config=settings, checkpoint_dir=tmp_path / "a")
    uninterrupted = train(seqs=seqs, split=split, model_config=config, train_config=settings, checkpoint_dir=tmp_path / "b")

    assert resumed.resumed_from_epoch == 1
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in uninterrupted.history], rel=1e-5)
    assert resumed.test == pytest.approx(uninterrupted.test)


def test_item_knn_scores_items_that_co_occur():
    knn = ItemKNN([np.array([1, 2]), np.array([1, 2]), np.array([3, 4])], n_items=4)

    scores = knn.scores([np.array([1])])

    assert scores[0, 2] > 0 and scores[0, 3] == 0 and scores[0, 4] == 0


@pytest.mark.parametrize("arch", ["transformer", "gru", "cnn"])
def test_short_sequences_in_a_long_window_give_finite_scores_in_training_and_eval(arch):
    """Mostly padding (2 real tokens in 50): a fully masked attention row used to put NaN into
    every later layer."""
    seqs = cyclic_shop(customers=4, length=2)
    model = encoder_build(EncoderConfig(arch=arch, n_items=N_ITEMS, dim=16, layers=2, heads=2, max_len=50))
    batch = data.batch_of(seqs, np.arange(4), 50)

    for mode in (model.train, model.eval):
        mode()
        assert torch.isfinite(model.full_sort_predict(batch)).all()
        assert torch.isfinite(model.calculate_loss(batch, data.training_targets(batch)))
