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
                   train_config=TrainConfig(epochs=25, batch_size=32, lr=1e-2, patience=25, seed=1),
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
    inputs, targets = data.training_batch(seqs, np.arange(4), np.ones(4, dtype="int64"), np.full(4, 2), 50)

    for mode in (model.train, model.eval):
        mode()
        assert torch.isfinite(model.full_sort_predict(batch)).all()
        assert torch.isfinite(model.calculate_loss(inputs, targets))


def _one_customer(items: list[int]) -> data.Sequences:
    n = len(items)
    return data.sequences_build(customers=np.zeros(n, dtype="int64"), items=np.array(items), event_types=np.ones(n, dtype="int64"),
                                times=np.arange(n, dtype="float64"), values=np.full(n, np.nan))


def test_the_newest_input_slot_is_trained_to_predict_the_next_item():
    """Take L + 1 tokens, feed the first L, targets shifted by one: the last slot, the one
    inference reads, predicts the token after the window."""
    seqs = _one_customer([5, 6, 7, 8, 9])

    inputs, targets = data.training_batch(seqs, np.array([0]), ends=np.array([4]), limits=np.array([5]), max_len=3)

    assert inputs["items"].tolist() == [[6, 7, 8]]
    assert targets["items"][..., 0].tolist() == [[7, 8, 9]]
    assert targets["event_types"].tolist() == [[1, 1, 1]]


def test_targets_for_each_of_the_next_k_items_stop_at_the_limit_and_skip_padding():
    seqs = _one_customer([5, 6, 7, 8, 9])

    inputs, targets = data.training_batch(seqs, np.array([0]), ends=np.array([3]), limits=np.array([4]), max_len=4, window=2)

    assert inputs["items"].tolist() == [[0, 5, 6, 7]]
    # item 9 lies past the limit (the validation item, say) and is never read; a padded slot has no target
    assert targets["items"][0].tolist() == [[0, 0], [6, 7], [7, 8], [8, 0]]


@pytest.mark.parametrize("arch", ["transformer", "gru", "cnn"])
def test_the_slot_inference_reads_gets_a_gradient(arch):
    """Before the shift-by-one convention a full window's last slot had no target, and nothing after
    it in a causal encoder, so its position embedding never moved from its random start."""
    seqs = _one_customer(list(range(1, 12)))
    model = encoder_build(EncoderConfig(arch=arch, n_items=N_ITEMS, dim=16, layers=1, max_len=8, dropout=0.0))
    inputs, targets = data.training_batch(seqs, np.array([0]), ends=np.array([10]), limits=np.array([11]), max_len=8)

    model.calculate_loss(inputs, targets).backward()

    assert model.tokens.positions.weight.grad[-1].abs().sum() > 0


def test_embedding_tables_start_small_with_zero_padding_rows():
    model = encoder_build(EncoderConfig(arch="gru", n_items=500, dim=64, max_len=50))
    tables = model.tokens

    for table in (tables.items, tables.event_types, tables.gaps, tables.prices, tables.positions):
        rows = table.weight[1:] if table.padding_idx is not None else table.weight
        assert float(rows.detach().std()) == pytest.approx(0.02, rel=0.25), table
        if table.padding_idx is not None:
            assert not table.weight[0].any(), table


def test_evaluation_scores_in_fp32_never_under_autocast(monkeypatch):
    """bf16 keeps 3 significant digits: many items tie, and a pessimistic rank counts each tie
    against the target. Training may use autocast on a GPU; evaluation must not ask for it."""
    from training.ml.trainer import evaluate_ranks

    requested = []
    real = torch.autocast

    def spy(*args, **kwargs):
        requested.append(kwargs.get("dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    seqs = cyclic_shop(customers=8)
    split = data.leave_one_out(seqs)
    model = encoder_build(EncoderConfig(arch="transformer", n_items=N_ITEMS, dim=16, layers=1, max_len=10))

    ranks = evaluate_ranks(model, seqs, split.rows, split.test_cut, split.test_item, device=torch.device("cpu"))

    assert requested == [] and len(ranks) == len(split.rows)


def test_evaluation_keeps_seen_items_in_the_ranking_unless_told_to_exclude_them():
    from training.ml.trainer import evaluate_ranks

    seqs = cyclic_shop(customers=20)
    split = data.leave_one_out(seqs)
    model = encoder_build(EncoderConfig(arch="gru", n_items=N_ITEMS, dim=16, layers=1, max_len=10))
    args = (model, seqs, split.rows, split.test_cut, split.test_item)

    kept = evaluate_ranks(*args, device=torch.device("cpu"), exclude_seen=False)
    excluded = evaluate_ranks(*args, device=torch.device("cpu"), exclude_seen=True)

    scores = model.full_sort_predict(data.batch_of(seqs, split.rows, 10, split.test_cut)).detach()
    assert torch.equal(kept, target_ranks(scores, torch.as_tensor(split.test_item)))
    assert (excluded <= kept).all() and (excluded < kept).any()


def test_same_second_events_keep_their_given_order():
    """MovieLens users rate several films in one second: a stable sort keeps file order."""
    seqs = data.sequences_build(customers=np.array([1, 1, 1, 1]), items=np.array([9, 4, 7, 2]),
                                event_types=np.ones(4, dtype="int64"), times=np.array([20.0, 10.0, 10.0, 10.0]),
                                values=np.full(4, np.nan))

    assert seqs.items[0].tolist() == [4, 7, 2, 9]


def test_learning_rate_warms_up_then_decays_to_zero():
    from training.ml.trainer import learning_rate

    settings = TrainConfig(lr=1e-3, warmup=0.1)

    assert learning_rate(settings, 0.05) == pytest.approx(5e-4)
    assert learning_rate(settings, 0.1) == pytest.approx(1e-3)
    assert learning_rate(settings, 0.55) == pytest.approx(5e-4)
    assert learning_rate(settings, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(TrainConfig(lr=1e-3, warmup=0.1, schedule="constant"), 0.9) == 1e-3


def test_long_histories_train_in_windows_that_cover_every_position_once():
    from training.ml.trainer import _training_windows  # noqa: PLC2701 (the windowing itself is under test)

    seqs = cyclic_shop(customers=3, length=25)
    split = data.leave_one_out(seqs)

    rows, ends, limits = _training_windows(seqs, split, max_len=10)

    for row, cut in zip(split.rows, split.valid_cut, strict=True):
        mine = ends[rows == row].tolist()
        assert mine[0] == cut - 1 and set(limits[rows == row].tolist()) == {cut}  # newest: up to the validation item
        covered = sorted(t for e in mine for t in range(max(e - 10, 0), e))
        assert covered == list(range(cut - 1)), (row, mine)


def test_shifted_windows_move_between_epochs_and_still_cover_every_position():
    from training.ml.trainer import _training_windows  # noqa: PLC2701 (the windowing itself is under test)

    seqs = cyclic_shop(customers=3, length=60)
    split = data.leave_one_out(seqs)
    np.random.seed(0)

    draws = [_training_windows(seqs, split, max_len=10, shift_windows=True) for _ in range(3)]

    assert len({tuple(ends.tolist()) for _, ends, _ in draws}) > 1
    for rows, ends, _ in draws:
        for row, cut in zip(split.rows, split.valid_cut, strict=True):
            covered = {t for e in ends[rows == row].tolist() for t in range(max(e - 10, 0), e)}
            assert covered == set(range(cut - 1))


def test_price_buckets_fitted_in_training_are_reused_for_later_encoding():
    values = np.array([1.0, 10.0, 100.0, 1000.0, np.nan])
    edges = data.price_edges_fit(values, n_buckets=6)

    alone = data.price_buckets(np.array([1000.0]), edges)  # one customer encoded after training

    assert alone.tolist() == data.price_buckets(values, edges)[3:4].tolist()
    assert data.price_buckets(np.array([np.nan, 0.0]), edges).tolist() == [1, 1]


def test_item_content_places_a_never_seen_item_next_to_items_described_alike():
    """Items 1..20 are bought in pairs (2k−1, 2k) whose content vectors match; item 20 never occurs
    in training. Its vector comes from content alone and must be closer to its twin 19 than to
    the other items."""
    rng = np.random.default_rng(0)
    content = torch.zeros(21, 8)
    for pair in range(10):
        direction = torch.from_numpy(rng.normal(size=8)).float()
        content[2 * pair + 1] = direction
        content[2 * pair + 2] = direction + 0.05 * torch.from_numpy(rng.normal(size=8)).float()
    rows = []
    for c in range(200):
        pair = rng.integers(0, 9 if c % 2 else 10)  # pair 9 (items 19, 20) only via item 19
        for t in range(6):
            item = 2 * pair + 1 + (t % 2 if pair < 9 else 0)
            rows.append((c, item, 1, t, 1.0))
    arr = np.array(rows, dtype="float64")
    seqs = data.sequences_build(customers=arr[:, 0].astype("int64"), items=arr[:, 1].astype("int64"),
                                event_types=arr[:, 2].astype("int64"), times=arr[:, 3], values=arr[:, 4])
    split = data.leave_one_out(seqs)
    config = EncoderConfig(arch="gru", n_items=20, dim=16, layers=1, max_len=8, dropout=0.0, content_dim=8)

    result = train(seqs=seqs, split=split, model_config=config, item_content=content.numpy(),
                   train_config=TrainConfig(epochs=15, batch_size=32, lr=1e-2, patience=15, seed=0))

    table = torch.nn.functional.normalize(result.model.item_embeddings().detach(), dim=1)
    similarity = table[20] @ table[1:19].T
    assert float(table[20] @ table[19]) > float(similarity.max())


def test_sequences_without_items_still_train_and_encode(tmp_path):
    """CDNOW lists dates, quantities and amounts, no items: the auxiliary heads (next event type
    and amount bucket) are the objective, early stopping watches their loss, and every customer
    still gets a finite unit embedding; big spenders end up nearer each other than to small ones."""
    rng = np.random.default_rng(0)
    rows = []
    for c in range(80):
        big = c % 2 == 0
        for t in range(12):
            rows.append((c, 0, 6, t * 86_400 * (3 if big else 20), float(rng.lognormal(5 if big else 2, 0.3))))
    arr = np.array(rows, dtype="float64")
    seqs = data.sequences_build(customers=arr[:, 0].astype("int64"), items=arr[:, 1].astype("int64"),
                                event_types=arr[:, 2].astype("int64"), times=arr[:, 3], values=arr[:, 4])
    split = data.leave_one_out(seqs)
    assert len(split.rows) == 0
    config = EncoderConfig(arch="gru", n_items=0, dim=16, layers=1, max_len=16, dropout=0.0, aux_weight=1.0,
                           price_edges=tuple(seqs.price_edges.tolist()))

    result = train(seqs=seqs, split=split, model_config=config, checkpoint_dir=tmp_path,
                   train_config=TrainConfig(epochs=6, batch_size=16, lr=1e-2, patience=3, seed=0))

    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] and result.test == {} and all(h["valid"] == {} for h in result.history)
    vectors = model_load(tmp_path / BEST).user_embedding(data.batch_of(seqs, np.arange(80), 16)).detach()
    assert torch.isfinite(vectors).all() and torch.allclose(vectors.norm(dim=1), torch.ones(80), atol=1e-5)
    similarity = vectors @ vectors.T
    big = torch.arange(80) % 2 == 0
    assert similarity[big][:, big].mean() > similarity[big][:, ~big].mean()


def test_time_split_tests_on_the_first_item_after_the_moment_and_validates_before_it():
    seqs = data.sequences_build(
        customers=np.array([1, 1, 1, 1, 2, 2, 3, 3, 3]), items=np.array([5, 6, 7, 8, 5, 6, 5, 6, 7]),
        event_types=np.ones(9, dtype="int64"), times=np.array([10, 20, 30, 40, 10, 20, 10, 50, 60], dtype="float64"),
        values=np.full(9, np.nan),
    )

    split = data.time_split(seqs, at=35)

    # customer 1: items before 35 are 5, 6, 7 → validate on 7 (cut 2), test on 8 (cut 3);
    # customer 2 has nothing after 35; customer 3 has one item before 35 (needs two)
    assert split.rows.tolist() == [0]
    assert (split.valid_cut[0], split.valid_item[0], split.test_cut[0], split.test_item[0]) == (2, 7, 3, 8)


def test_a_time_split_trains_nobody_on_what_came_after_it():
    from training.ml.trainer import _training_windows  # noqa: PLC2701 (the windowing itself is under test)

    seqs = data.sequences_build(
        customers=np.array([1, 1, 1, 1, 2, 2, 2]), items=np.array([5, 6, 7, 8, 5, 6, 7]),
        event_types=np.ones(7, dtype="int64"), times=np.array([10, 20, 30, 40, 10, 50, 60], dtype="float64"),
        values=np.full(7, np.nan),
    )
    split = data.time_split(seqs, at=35)

    rows, ends, limits = _training_windows(seqs, split, max_len=10, before=35)

    # customer 1 (in the split) up to its validation item; customer 2 (outside it) only its event at 10
    assert dict(zip(rows.tolist(), limits.tolist(), strict=True)) == {0: 2}
    assert ends.tolist() == [1]


def test_the_repeat_offset_moves_only_items_already_seen_up_to_each_position():
    model = encoder_build(EncoderConfig(arch="gru", n_items=8, dim=8, layers=1, max_len=4, repeat_bias=True)).eval()
    batch = {"items": torch.tensor([[0, 4, 2, 4]]), "event_types": torch.tensor([[0, 1, 1, 1]]),
             "gaps": torch.tensor([[0, 1, 2, 2]]), "prices": torch.tensor([[0, 1, 1, 1]])}
    before = model.full_sort_predict(batch).detach()
    with torch.no_grad():
        model.repeat.fill_(-2.0)

    moved = (model.full_sort_predict(batch).detach() - before)[0]
    per_position = model._seen_offsets(torch.zeros(3, 9), batch["items"], batch["event_types"] > 0)

    assert moved.tolist() == pytest.approx([0, 0, -2, 0, -2, 0, 0, 0, 0])
    assert [torch.nonzero(row).flatten().tolist() for row in per_position] == [[4], [2, 4], [2, 4]]


def test_the_repeat_offset_turns_negative_where_nobody_repeats():
    seqs = cyclic_shop(customers=100, length=10)  # a walk without repeats (but for the popular item)
    split = data.leave_one_out(seqs)
    config = EncoderConfig(arch="gru", n_items=N_ITEMS, dim=16, layers=1, max_len=20, repeat_bias=True)

    result = train(seqs=seqs, split=split, model_config=config,
                   train_config=TrainConfig(epochs=3, batch_size=32, lr=1e-2, patience=5, seed=1))

    assert float(result.model.repeat.detach()) < -0.03


def test_a_checkpoint_saved_before_the_repeat_offset_still_loads(tmp_path):
    config = EncoderConfig(arch="gru", n_items=N_ITEMS, dim=16, layers=1, max_len=8, repeat_bias=False)
    model = encoder_build(config)
    args = {k: v for k, v in config.as_dict().items() if k != "repeat_bias"}  # as older versions wrote them
    torch.save({"model_args": args, "state_dict": model.state_dict()}, tmp_path / BEST)

    loaded = model_load(tmp_path / BEST)

    assert loaded.repeat is None
