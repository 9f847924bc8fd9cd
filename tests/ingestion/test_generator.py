"""The synthetic shop generator: exact volumes, consistent ids, realistic journeys, recoverable truth.

Pure: no Django, no database. One small shop is generated once per module and shared.
"""

import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ingestion.generator import (
    CHANNELS,
    CHUNK_ROWS,
    DEVICES,
    EVENT_COLUMNS,
    EVENT_TYPES,
    RELATIONS,
    SEGMENTS,
    ShopConfig,
    generate_customers,
    generate_events,
    generate_items,
    generate_social_edges,
)

CONFIG = ShopConfig(customers=300, events=60_000, seed=7, customers_per_batch=120)
END = CONFIG.start + timedelta(days=CONFIG.days)


def _shop(config: ShopConfig) -> dict[str, pd.DataFrame]:
    pairs = list(generate_customers(config))
    return {
        "items": generate_items(config),
        "customers": pd.concat([c for c, _ in pairs], ignore_index=True),
        "truth": pd.concat([t for _, t in pairs], ignore_index=True),
        "events": pd.concat(list(generate_events(config)), ignore_index=True),
        "edges": generate_social_edges(config),
    }


@pytest.fixture(scope="module")
def shop() -> dict[str, pd.DataFrame]:
    return _shop(CONFIG)


@pytest.fixture(scope="module")
def events(shop) -> pd.DataFrame:
    """Events joined with their customer's truth, signup date and the item's category and price."""
    items = shop["items"].assign(top=lambda f: f["category_path"].str.split("/").str[0])
    items["price_percentile"] = items.groupby("top")["price"].rank(pct=True)
    people = shop["truth"][["external_id", "segment", "churned_at"]].merge(
        shop["customers"][["external_id", "signup_date"]], on="external_id"
    )
    return (
        shop["events"]
        .merge(people, left_on="customer_id", right_on="external_id", how="left")
        .merge(items[["sku", "top", "price", "price_percentile"]], left_on="item_id", right_on="sku", how="left")
    )


def _favourites(truth: pd.DataFrame) -> pd.Series:
    return truth.set_index("external_id")["parameters"].map(lambda p: p["favourite_category"])


def test_same_seed_repeats_exactly_and_another_seed_differs(shop):
    again = _shop(CONFIG)
    for name, frame in shop.items():
        pd.testing.assert_frame_equal(frame, again[name], obj=name)

    other = _shop(ShopConfig(customers=300, events=60_000, seed=8, customers_per_batch=120))
    assert not other["events"]["event_id"].isin(shop["events"]["event_id"]).any()
    assert not other["events"]["timestamp"].equals(shop["events"]["timestamp"])
    assert not other["truth"]["segment"].equals(shop["truth"]["segment"])
    assert not other["items"]["price"].equals(shop["items"]["price"])


@pytest.mark.parametrize(
    ("customers", "events", "per_batch"),
    [(300, 60_000, 120), (50, 7, 20), (1, 1_234, 1), (40, 0, 40), (250, 33_333, 7)],
)
def test_event_total_is_exactly_the_configured_count(customers, events, per_batch):
    config = ShopConfig(customers=customers, events=events, seed=3, customers_per_batch=per_batch)

    total = sum(len(chunk) for chunk in generate_events(config))

    assert total == events


def test_each_customer_gets_the_event_count_the_truth_reports(shop):
    truth = shop["truth"].set_index("external_id")["parameters"].map(lambda p: p["events"])
    counted = shop["events"]["customer_id"].value_counts().reindex(truth.index, fill_value=0)

    assert (counted == truth).all()
    assert truth.sum() == CONFIG.events
    # Heavy-tailed activity: the busiest tenth of customers make far more than a tenth of events.
    assert truth.sort_values().tail(len(truth) // 10).sum() > 0.3 * CONFIG.events


def test_event_chunks_have_exactly_the_documented_columns_and_dtypes():
    chunk = next(generate_events(CONFIG))

    assert tuple(chunk.columns) == EVENT_COLUMNS
    assert str(chunk["timestamp"].dtype) == "datetime64[us, UTC]"
    text = ("event_id", "customer_id", "item_id", "event_type", "currency", "session_id", "channel", "device", "order_id")
    for name in text:
        assert chunk[name].dtype == "str", name
    assert chunk["quantity"].dtype == "int64"
    assert chunk["value"].dtype == "float64"
    assert chunk["rating"].dtype == "float64"
    assert chunk["context"].dtype == object


def test_field_values_follow_the_event_type(shop):
    ev = shop["events"]
    kind = ev["event_type"]
    prices = shop["items"].set_index("sku")["price"]

    assert set(kind) == set(EVENT_TYPES)
    assert ev["event_id"].is_unique
    assert ev["event_id"].map(lambda s: uuid.UUID(s).version).eq(4).all()
    assert (ev["item_id"].isna() == (kind == "search")).all()
    priced = kind.isin(["add_to_cart", "remove_from_cart", "purchase", "refund"])
    assert ev["value"].notna().eq(priced).all()
    expected = (ev.loc[priced, "item_id"].map(prices) * ev.loc[priced, "quantity"]).round(2)
    assert np.allclose(ev.loc[priced, "value"], expected)
    assert (ev["quantity"] >= 1).all() and (ev.loc[~priced, "quantity"] == 1).all()
    assert ev["rating"].notna().eq(kind == "rating").all()
    assert ev["rating"].dropna().between(1, 5).all()
    assert (ev["order_id"] != "").eq(kind.isin(["purchase", "refund"])).all()
    assert (ev["currency"] == "USD").all()
    assert set(ev["channel"]) <= set(CHANNELS) and set(ev["device"]) <= set(DEVICES)
    queries = ev.loc[kind == "search", "context"]
    assert queries.map(lambda c: isinstance(c, dict) and bool(c.get("query"))).all()
    assert ev.loc[kind != "search", "context"].isna().all()


def test_generators_agree_on_customers_items_and_segments(shop):
    customers, truth, ev = shop["customers"], shop["truth"], shop["events"]

    assert customers["external_id"].tolist() == truth["external_id"].tolist()
    assert customers["external_id"].is_unique and len(customers) == CONFIG.customers
    assert set(ev["customer_id"]) <= set(customers["external_id"])
    assert set(ev["item_id"].dropna()) <= set(shop["items"]["sku"])
    assert set(truth["segment"]) == set(SEGMENTS)
    edge_ids = set(shop["edges"]["source_id"]) | set(shop["edges"]["target_id"])
    assert edge_ids <= set(customers["external_id"])


def test_every_purchase_follows_a_view_and_an_add_to_cart_of_the_same_item_in_its_session(shop):
    ev = shop["events"]
    first_at = {
        kind: ev[ev["event_type"] == kind].groupby(["customer_id", "session_id", "item_id"])["timestamp"].min()
        for kind in ("view", "add_to_cart")
    }
    purchases = ev[ev["event_type"] == "purchase"].set_index(["customer_id", "session_id", "item_id"])["timestamp"]
    assert len(purchases) > 500

    carted = first_at["add_to_cart"].reindex(purchases.index)
    viewed = first_at["view"].reindex(purchases.index)

    assert carted.notna().all() and viewed.notna().all()
    assert (viewed < carted).all()
    assert (carted < purchases).all()
    # Inside a session, steps are seconds to minutes apart.
    gap = (purchases - carted).dt.total_seconds()
    assert gap.min() >= 6 and gap.median() < 600


def test_refunds_come_days_after_their_purchase_with_the_same_order_and_item(shop):
    ev = shop["events"]
    purchases = ev[ev["event_type"] == "purchase"].set_index("order_id")
    refunds = ev[ev["event_type"] == "refund"]
    assert len(refunds) > 20
    assert purchases.index.is_unique

    bought = purchases.loc[refunds["order_id"]].reset_index()
    refunds = refunds.reset_index(drop=True)

    assert (bought["item_id"] == refunds["item_id"]).all()
    assert (bought["customer_id"] == refunds["customer_id"]).all()
    assert (bought["value"] == refunds["value"]).all()
    wait = refunds["timestamp"] - bought["timestamp"]
    assert (wait > pd.Timedelta(0)).all()
    assert wait.median() > pd.Timedelta(days=2)


def test_churners_have_no_events_after_churn(shop, events):
    truth = shop["truth"]
    churner = truth["segment"] == "churner"
    assert truth.loc[churner, "churned_at"].notna().all()
    assert truth.loc[~churner, "churned_at"].isna().all()
    assert (truth.loc[churner, "churned_at"] < END).all()

    of_churners = events[events["segment"] == "churner"]

    assert len(of_churners) > 1_000
    assert (of_churners["timestamp"] <= of_churners["churned_at"]).all()
    # and they were active before: most churners have events in their last active quarter or so
    last = of_churners.groupby("customer_id")[["timestamp", "churned_at"]].max()
    assert ((last["churned_at"] - last["timestamp"]) < pd.Timedelta(days=60)).mean() > 0.5


def test_events_fall_between_signup_and_end_of_period(events):
    signup = pd.to_datetime(events["signup_date"]).dt.tz_localize("UTC")

    assert (events["timestamp"] >= signup).all()
    assert (events["timestamp"] >= CONFIG.start).all()
    assert (events["timestamp"] <= END).all()


def test_bargain_hunters_buy_cheaper_within_category_than_big_spenders(events):
    purchases = events[events["event_type"] == "purchase"]

    percentile = purchases.groupby("segment")["price_percentile"].mean()

    assert percentile["bargain_hunter"] < 0.4
    assert percentile["loyal_big_spender"] > 0.6


def test_window_shoppers_turn_far_fewer_views_into_purchases_than_big_spenders(events):
    counts = events.groupby(["segment", "event_type"]).size().unstack(fill_value=0)

    conversion = counts["purchase"] / counts["view"]

    assert conversion["window_shopper"] * 5 < conversion["loyal_big_spender"]


def test_top_category_by_events_matches_the_ground_truth_favourite(shop, events):
    with_item = events.dropna(subset=["top"])
    busy = with_item["customer_id"].value_counts()
    busy = busy[busy >= 30].index
    assert len(busy) > 150

    per_category = with_item.groupby(["customer_id", "top"]).size()
    top = per_category.loc[busy].groupby(level=0).idxmax().map(lambda key: key[1])

    assert (top == _favourites(shop["truth"]).reindex(top.index)).mean() >= 0.7


def test_sessions_cluster_around_the_customers_peak_hour(shop):
    ev = shop["events"]
    starts = ev.groupby("session_id").agg(customer_id=("customer_id", "first"), at=("timestamp", "min"))
    peak = shop["truth"].set_index("external_id")["parameters"].map(lambda p: p["peak_hour"])

    hour = starts["at"].dt.hour + starts["at"].dt.minute / 60
    distance = (hour - starts["customer_id"].map(peak)).abs()
    distance = np.minimum(distance, 24 - distance)

    # uniform hours would put about a third within 4 h of the peak
    assert (distance <= 4).mean() > 0.6


def test_no_view_or_search_repeats_within_five_seconds(shop):
    # ingestion's cleaning drops such repeats as double clicks; the generator must not make them
    ev = shop["events"]
    noisy = ev[ev["event_type"].isin(["view", "search"])].assign(
        item=lambda f: f["item_id"].fillna(""), query=lambda f: f["context"].map(lambda c: c and c["query"]).fillna("")
    )
    noisy = noisy.sort_values(["customer_id", "event_type", "item", "query", "timestamp"])
    keys = noisy[["customer_id", "event_type", "item", "query"]]
    same = (keys == keys.shift()).all(axis=1)
    gap = noisy["timestamp"].diff().dt.total_seconds()

    assert not (same & (gap <= 5)).any()


def test_social_edges_mostly_join_customers_of_the_same_segment(shop):
    edges = shop["edges"]
    segment = shop["truth"].set_index("external_id")["segment"]
    assert len(edges) > CONFIG.customers

    within = (edges["source_id"].map(segment) == edges["target_id"].map(segment)).mean()

    assert within >= 0.6
    assert (edges["source_id"] != edges["target_id"]).all()
    assert not edges.duplicated(["source_id", "target_id", "relation"]).any()
    assert set(edges["relation"]) == set(RELATIONS)
    assert str(edges["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert edges["occurred_at"].between(CONFIG.start, END).all()


def test_events_stream_in_bounded_chunks_when_above_the_chunk_size():
    config = ShopConfig(customers=500, events=CHUNK_ROWS + 5_000, seed=1)

    sizes = [len(chunk) for chunk in generate_events(config)]

    assert len(sizes) > 1
    assert max(sizes) <= CHUNK_ROWS
    assert sum(sizes) == config.events


def test_items_have_titles_category_paths_and_category_dependent_prices(shop):
    items = shop["items"]
    assert len(items) == CONFIG.item_count
    assert items["sku"].str.fullmatch(r"SKU-\d{6}").all() and items["sku"].is_unique

    tops = items["category_path"].str.split("/").str[0]

    assert tops.nunique() == CONFIG.categories
    assert items["category_path"].str.fullmatch(r"[^/]+/[^/]+").all()
    assert (items["price"] > 0).all() and (items["currency"] == "USD").all()
    assert all(title.startswith(brand) for title, brand in zip(items["title"], items["brand"], strict=True))
    assert items["attributes"].map(lambda a: isinstance(a, dict)).all()
    medians = items.groupby(tops)["price"].median()
    assert medians.max() > 5 * medians.min()


def test_customers_have_plausible_profiles(shop):
    c = shop["customers"]

    assert c["external_id"].str.fullmatch(r"C\d{7}").all()
    assert c["email"].str.fullmatch(r"[a-z.]+\.\d+@[a-z.]+").all() and c["email"].is_unique
    assert c["phone"].str.fullmatch(r"\+1-\d{3}-555-\d{4}").all()
    assert c["age"].between(18, 90).all() and c["age"].dtype == "int64"
    assert set(c["gender"]) <= {"female", "male", "other"}
    assert c["signup_date"].map(lambda d: isinstance(d, date)).all()
    assert (c["signup_date"] < END.date()).all()
    assert 0.9 <= c["consent_profiling"].mean() < 1.0
    for flag in ("is_loyalty_member", "consent_profiling", "consent_marketing"):
        assert c[flag].dtype == bool


def test_config_refuses_impossible_shops():
    with pytest.raises(ValueError):
        ShopConfig(customers=10, events=10, categories=99)
    with pytest.raises(ValueError):
        ShopConfig(customers=10, events=10, start=datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        ShopConfig(customers=0, events=10)
    assert ShopConfig(customers=10, events=10, start=datetime(2025, 1, 1, tzinfo=UTC)).item_count == 200
