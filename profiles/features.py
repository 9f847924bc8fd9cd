"""Customer features from the event store: one SQL pass aggregates every customer's events
(GROUPING SETS give the per-customer totals and the per-category, brand, channel and device
breakdowns from the same scan); pandas turns the result into one row of named traits per customer.

Feature definitions (all relative to `as_of`, the reference time):
- recency_days: days since the last purchase (NaN without one); frequency: distinct orders, an
  order being the order id when the source has one, else the purchase's calendar day (UTC), as in
  the RFM/BG-NBD literature for sources such as CDNOW; monetary: purchase value; net_monetary:
  minus refunds; average_order_value: monetary / frequency.
- tenure_days: days since the first event; activity_trend: ln(1 + events in the last 30 days) −
  ln(1 + events in the 30 before).
- funnel: view_to_cart = carts / views, cart_to_purchase = purchases / carts, view_to_purchase.
- price_percentile: mean percentile of purchased items' prices within their top-level category
  (0 cheapest … 1 dearest); price_sensitivity = 1 − price_percentile, raised by the share bought on
  discount where the event context says so (`context.discount`).
- preferred_hour: circular mean of event hours (UTC); weekend_share; sessions and events per
  session; channel and device shares.
- social: degree, referrals made/received, shares, mean net value of neighbours (their net spend
  when the feature set was fitted, from `CustomerValue`: a neighbour's value is a slow-moving
  context, and reading it per neighbour from events cost more than the rest of the features).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from django.db import connection, transaction

from ingestion.models import EventType

ACTIVITY_WINDOW_DAYS = 30
TOP_CATEGORIES = 3
TOP_BRANDS = 3

# Weight of an event in category and brand interest: a purchase says more than a view.
_INTEREST_WEIGHT = (
    f"CASE e.event_type WHEN {EventType.PURCHASE} THEN 5 WHEN {EventType.ADD_TO_CART} THEN 3 "
    f"WHEN {EventType.RATING} THEN 2 WHEN {EventType.REFUND} THEN 0 WHEN {EventType.CANCEL} THEN 0 ELSE 1 END"
)

# One pass over the events: the customers' events (joined to their items' category, brand and
# price percentile) are staged once in a transaction-local table; the aggregates below read that.
_SCOPE_SQL = f"""
CREATE TEMP TABLE feature_scope ON COMMIT DROP AS
WITH item_price AS (
    SELECT id,
           nullif(split_part(category_path, '/', 1), '') AS category,
           nullif(brand, '') AS brand,
           CASE WHEN price IS NULL THEN NULL
                ELSE percent_rank() OVER (PARTITION BY split_part(category_path, '/', 1) ORDER BY price) END AS price_pct
    FROM ingestion_item
)
SELECT e.customer_id, e.event_type, e.occurred_at, e.value, e.quantity, e.rating,
       nullif(e.session_id, '') AS session_id, nullif(e.channel, '') AS channel, nullif(e.device, '') AS device,
       CASE WHEN e.event_type = {EventType.PURCHASE}
            THEN coalesce(nullif(e.order_id, ''), (e.occurred_at AT TIME ZONE 'UTC')::date::text) END AS order_key,
       e.ingested_at, (e.context ? 'discount') AS on_discount,
       ip.category, ip.brand, ip.price_pct,
       {_INTEREST_WEIGHT} AS interest
FROM ingestion_event e
LEFT JOIN item_price ip ON ip.id = e.item_id
WHERE e.customer_id = ANY(%(ids)s) AND e.occurred_at < %(until)s
"""

_TOTALS_SQL = f"""
SELECT e.customer_id,
       count(*) AS events,
       count(*) FILTER (WHERE e.event_type = {EventType.VIEW}) AS views,
       count(*) FILTER (WHERE e.event_type = {EventType.SEARCH}) AS searches,
       count(*) FILTER (WHERE e.event_type = {EventType.ADD_TO_CART}) AS carts,
       count(*) FILTER (WHERE e.event_type = {EventType.REMOVE_FROM_CART}) AS cart_removals,
       count(*) FILTER (WHERE e.event_type = {EventType.PURCHASE}) AS purchase_events,
       count(*) FILTER (WHERE e.event_type = {EventType.REFUND}) AS refunds,
       count(*) FILTER (WHERE e.event_type = {EventType.CANCEL}) AS cancellations,
       count(*) FILTER (WHERE e.event_type = {EventType.SHARE}) AS shares,
       count(DISTINCT e.order_key) AS frequency,
       coalesce(sum(e.value) FILTER (WHERE e.event_type = {EventType.PURCHASE}), 0)::float8 AS monetary,
       coalesce(sum(e.value) FILTER (WHERE e.event_type = {EventType.REFUND}), 0)::float8 AS refunded_value,
       coalesce(sum(e.quantity) FILTER (WHERE e.event_type = {EventType.PURCHASE}), 0) AS units,
       avg(e.price_pct) FILTER (WHERE e.event_type = {EventType.PURCHASE}) AS price_percentile,
       avg(e.on_discount::int) FILTER (WHERE e.event_type = {EventType.PURCHASE}) AS discount_share,
       avg(e.rating) AS rating_mean,
       stddev_samp(e.rating) AS rating_std,
       count(e.rating) AS ratings,
       min(e.occurred_at) AS first_event_at,
       max(e.occurred_at) AS last_event_at,
       min(e.occurred_at) FILTER (WHERE e.event_type = {EventType.PURCHASE}) AS first_purchase_at,
       max(e.occurred_at) FILTER (WHERE e.event_type = {EventType.PURCHASE}) AS last_purchase_at,
       max(e.ingested_at) AS watermark,
       count(*) FILTER (WHERE e.occurred_at >= %(recent_from)s) AS events_recent,
       count(*) FILTER (WHERE e.occurred_at >= %(previous_from)s AND e.occurred_at < %(recent_from)s) AS events_previous,
       avg(sin(extract(hour FROM e.occurred_at AT TIME ZONE 'UTC') * pi() / 12)) AS hour_sin,
       avg(cos(extract(hour FROM e.occurred_at AT TIME ZONE 'UTC') * pi() / 12)) AS hour_cos,
       avg((extract(isodow FROM e.occurred_at AT TIME ZONE 'UTC') >= 6)::int) AS weekend_share,
       count(DISTINCT e.session_id) AS sessions
FROM feature_scope e
GROUP BY e.customer_id
"""

# Interest per category and brand, events per channel and device: GROUPING SETS, one scan.
_BREAKDOWN_SQL = """
SELECT e.customer_id, GROUPING(e.category, e.brand, e.channel, e.device) AS grouping_id,
       coalesce(e.category, e.brand, e.channel, e.device) AS name,
       count(*)::float8 AS events, sum(e.interest)::float8 AS interest
FROM feature_scope e
GROUP BY GROUPING SETS ((e.customer_id, e.category), (e.customer_id, e.brand),
                       (e.customer_id, e.channel), (e.customer_id, e.device))
"""

# GROUPING() bits, in the order of its arguments: category, brand, channel, device (1 = rolled up).
_BY_CATEGORY, _BY_BRAND, _BY_CHANNEL, _BY_DEVICE = 0b0111, 0b1011, 0b1101, 0b1110

_SOCIAL_SQL = """
WITH edges AS (
    SELECT source_customer_id AS customer_id, target_customer_id AS other, relation, true AS outgoing
    FROM ingestion_socialedge WHERE source_customer_id = ANY(%(ids)s)
    UNION ALL
    SELECT target_customer_id, source_customer_id, relation, false
    FROM ingestion_socialedge WHERE target_customer_id = ANY(%(ids)s)
)
SELECT edges.customer_id,
       count(DISTINCT edges.other) AS degree,
       count(*) FILTER (WHERE relation = 2 AND outgoing) AS referrals_made,
       count(*) FILTER (WHERE relation = 2 AND NOT outgoing) AS referrals_received,
       count(*) FILTER (WHERE relation = 3 AND outgoing) AS shares_to_others,
       max(neighbours.value)::float8 AS neighbours_net_value
FROM edges JOIN (
    -- each neighbour once, however many edges connect the two
    SELECT pairs.customer_id, avg(coalesce(v.net_value, 0)) AS value
    FROM (SELECT DISTINCT customer_id, other FROM edges) pairs
    LEFT JOIN profiles_customervalue v ON v.customer_id = pairs.other
    GROUP BY pairs.customer_id
) neighbours ON neighbours.customer_id = edges.customer_id
GROUP BY edges.customer_id
"""

_CUSTOMERS_SQL = """
SELECT id AS customer_id, age_band, gender, region, is_loyalty_member, consent_profiling, signup_date
FROM ingestion_customer WHERE id = ANY(%(ids)s)
"""

# Numeric traits that enter the standardised vector, in a fixed order.
NUMERIC_FEATURES = (
    "recency_days", "frequency", "monetary", "net_monetary", "average_order_value", "tenure_days",
    "days_since_last_event", "events", "activity_trend", "views", "searches", "carts", "purchase_events", "units",
    "view_to_cart", "cart_to_purchase", "view_to_purchase", "refunds", "refund_rate", "cancellations",
    "price_percentile", "price_sensitivity", "discount_share", "ratings", "rating_mean", "rating_std",
    "hour_sin", "hour_cos", "weekend_share", "sessions", "events_per_session", "category_entropy",
    "top_category_share", "brand_count", "mobile_share", "app_share", "shares", "degree",
    "referrals_made", "referrals_received", "neighbours_net_value",
)


@dataclass(frozen=True)
class FeatureWindow:
    """Events strictly before `until` count; ages are measured at `as_of` (normally the same)."""

    as_of: datetime
    until: datetime

    @classmethod
    def at(cls, moment: datetime) -> FeatureWindow:
        return cls(as_of=moment, until=moment)


def store_as_of() -> datetime | None:
    """The store's own "now": the newest event time. Historical data (CDNOW ends in 1998) gets
    ages measured from its own end, not from today."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(occurred_at) FROM ingestion_event")
        (latest,) = cursor.fetchone()
    return latest


def _fetch_frame(sql: str, params: dict) -> pd.DataFrame:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = [c.name for c in cursor.description]
        return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)


def features_compute(*, customer_ids: list[int], window: FeatureWindow) -> pd.DataFrame:
    """One row per given customer (index customer_id): numeric traits (NUMERIC_FEATURES) plus
    descriptive ones (top categories, brands, channel, device, attributes). Customers without
    events get zero counts and NaN where a quantity is undefined."""
    ids = sorted({int(i) for i in customer_ids})
    if not ids:
        return pd.DataFrame(columns=["customer_id"]).set_index("customer_id")
    window_params = {
        "recent_from": window.as_of - pd.Timedelta(days=ACTIVITY_WINDOW_DAYS),
        "previous_from": window.as_of - pd.Timedelta(days=2 * ACTIVITY_WINDOW_DAYS),
    }
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_SCOPE_SQL, {"ids": ids, "until": window.until})
        totals = _fetch_frame(_TOTALS_SQL, window_params)
        breakdown = _fetch_frame(_BREAKDOWN_SQL, {})
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE feature_scope")
    social = _fetch_frame(
_SOCIAL_SQL, {"ids": ids})
    customers = _fetch_frame(_CUSTOMERS_SQL, {"ids": ids})
    return features_assemble(
        ids=ids, totals=totals, breakdown=breakdown, social=social, customers=customers, as_of=window.as_of
    )


def _shares(part: pd.DataFrame, weight: str) -> pd.DataFrame:
    """(customer_id, name, weight) → each customer's shares summing to 1, heaviest first."""
    part = part[part["name"].notna() & (part[weight] > 0)].copy()
    part["share"] = part[weight] / part.groupby("customer_id")[weight].transform("sum")
    return part.sort_values(["customer_id", "share", "name"], ascending=[True, False, True])


def _per_customer(shares: pd.DataFrame, top: int | None) -> dict[int, list[dict]]:
    """customer_id → [{"name", "share"}, …] heaviest first (at most `top`), in one pass."""
    out: dict[int, list[dict]] = {}
    for customer_id, name, share in zip(
        shares["customer_id"].to_numpy(), shares["name"].to_numpy(), shares["share"].to_numpy(), strict=True
    ):
        entries = out.setdefault(int(customer_id), [])
        if top is None or len(entries) < top:
            entries.append({"name": name, "share": round(float(share), 4)})
    return out


def features_assemble(
    *, ids: list[int], totals: pd.DataFrame, breakdown: pd.DataFrame, social: pd.DataFrame,
    customers: pd.DataFrame, as_of: datetime,
) -> pd.DataFrame:
    """Pure pandas: the SQL results → one row of traits per customer."""
    out = pd.DataFrame(index=pd.Index(ids, name="customer_id"))
    totals = totals.set_index("customer_id")
    count_columns = (
        "events", "views", "searches", "carts", "cart_removals", "purchase_events", "refunds", "cancellations",
        "shares", "frequency", "units", "ratings", "sessions", "events_recent", "events_previous",
    )
    for column in count_columns:
        out[column] = totals[column].reindex(out.index).fillna(0).astype("int64")
    for column in ("monetary", "refunded_value"):
        out[column] = totals[column].reindex(out.index).astype("float64").fillna(0.0)
    for column in ("price_percentile", "discount_share", "rating_mean", "rating_std", "hour_sin", "hour_cos", "weekend_share"):
        out[column] = pd.to_numeric(totals[column].reindex(out.index), errors="coerce").astype("float64")
    for column in ("first_event_at", "last_event_at", "first_purchase_at", "last_purchase_at", "watermark"):
        out[column] = pd.to_datetime(totals[column].reindex(out.index), utc=True)

    as_of_ts = pd.Timestamp(as_of)
    day = pd.Timedelta(days=1)
    out["recency_days"] = (as_of_ts - out["last_purchase_at"]) / day
    out["tenure_days"] = (as_of_ts - out["first_event_at"]) / day
    out["days_since_last_event"] = (as_of_ts - out["last_event_at"]) / day
    out["net_monetary"] = out["monetary"] - out["refunded_value"]
    out["average_order_value"] = out["monetary"] / out["frequency"].where(out["frequency"] > 0)
    out["activity_trend"] = np.log1p(out["events_recent"]) - np.log1p(out["events_previous"])
    out["view_to_cart"] = out["carts"] / out["views"].where(out["views"] > 0)
    out["cart_to_purchase"] = (out["purchase_events"] / out["carts"].where(out["carts"] > 0)).clip(upper=1.0)
    out["view_to_purchase"] = out["purchase_events"] / out["views"].where(out["views"] > 0)
    out["refund_rate"] = out["refunds"] / out["purchase_events"].where(out["purchase_events"] > 0)
    out["price_sensitivity"] = (1.0 - out["price_percentile"]).where(
        out["discount_share"].isna(), 0.5 * (1.0 - out["price_percentile"]) + 0.5 * out["discount_share"]
    )
    hours = (np.degrees(np.arctan2(out["hour_sin"], out["hour_cos"])) / 15.0) % 24
    out["preferred_hour"] = hours.round(1)
    out["events_per_session"] = out["events"] / out["sessions"].where(out["sessions"] > 0)

    categories = _shares(breakdown[breakdown["grouping_id"] == _BY_CATEGORY], "interest")
    all_categories = _per_customer(categories, None)
    out["top_categories"] = pd.Series({c: v[:TOP_CATEGORIES] for c, v in all_categories.items()}, dtype=object).reindex(out.index)
    out["category_shares"] = pd.Series(
        {c: {e["name"]: e["share"] for e in v} for c, v in all_categories.items()}, dtype=object
    ).reindex(out.index)
    entropy = categories.assign(h=-categories["share"] * np.log2(categories["share"])).groupby("customer_id")["h"].sum()
    out["category_entropy"] = entropy.reindex(out.index)
    out["top_category_share"] = categories.groupby("customer_id")["share"].max().reindex(out.index)
    brands = _shares(breakdown[breakdown["grouping_id"] == _BY_BRAND], "interest")
    out["top_brands"] = pd.Series(_per_customer(brands, TOP_BRANDS), dtype=object).reindex(out.index)
    out["brand_count"] = brands.groupby("customer_id").size().reindex(out.index).fillna(0).astype("int64")

    channels = _shares(breakdown[breakdown["grouping_id"] == _BY_CHANNEL], "events")
    devices = _shares(breakdown[breakdown["grouping_id"] == _BY_DEVICE], "events")
    out["top_channel"] = channels.groupby("customer_id")["name"].first().reindex(out.index)
    out["top_device"] = devices.groupby("customer_id")["name"].first().reindex(out.index)
    app = channels[channels["name"] == "app"].groupby("customer_id")["share"].sum().reindex(out.index)
    mobile = devices[devices["name"] == "mobile"].groupby("customer_id")["share"].sum().reindex(out.index)
    # 0 for customers whose events name channels (devices) but never the app (mobile); NaN if none do
    out["app_share"] = app.where(out["top_channel"].isna(), app.fillna(0.0))
    out["mobile_share"] = mobile.where(out["top_device"].isna(), mobile.fillna(0.0))

    social = social.set_index("customer_id") if len(social) else pd.DataFrame(
        columns=["degree", "referrals_made", "referrals_received", "shares_to_others", "neighbours_net_value"]
    )
    for column in ("degree", "referrals_made", "referrals_received", "shares_to_others"):
        out[column] = pd.to_numeric(social[column].reindex(out.index), errors="coerce").fillna(0).astype("int64")
    out["neighbours_net_value"] = pd.to_numeric(social["neighbours_net_value"].reindex(out.index), errors="coerce")

    customers = customers.set_index("customer_id").reindex(out.index)
    consent = customers["consent_profiling"].fillna(True).astype(bool)
    # Basic attributes enter the profile only where the customer consents to profiling.
    for column in ("age_band", "gender", "region"):
        out[column] = customers[column].where(consent & customers[column].fillna("").ne(""))
    out["is_loyalty_member"] = customers["is_loyalty_member"].where(consent)
    out["consent_profiling"] = consent
    return out


def numeric_matrix(features: pd.DataFrame, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """The numeric traits as float64 (NaN where undefined), columns in `names` order."""
    return features.reindex(columns=list(names)).apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")


def _jsonable(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else round(float(value), 4)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if value is pd.NaT:
        return None
    return value


TRAIT_COLUMNS = (
    *NUMERIC_FEATURES, "refunded_value", "preferred_hour", "top_categories",
    "category_shares", "top_brands", "top_channel", "top_device", "shares_to_others", "first_event_at",
    "last_event_at", "first_purchase_at", "last_purchase_at", "age_band", "gender", "region", "is_loyalty_member",
)


def traits_records(features: pd.DataFrame, extra: tuple[str, ...] = ()) -> list[dict]:
    """Each customer's traits as JSON-safe values (None where undefined), in row order.
    Column-wise conversion: per-value conversion cost ~0.3 ms a customer."""
    names = [n for n in (*TRAIT_COLUMNS, *extra) if n in features.columns]
    columns = {}
    for name in names:
        column = features[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            columns[name] = [None if pd.isna(v) else v.isoformat() for v in column]
        elif pd.api.types.is_bool_dtype(column) or pd.api.types.is_integer_dtype(column):
            columns[name] = column.tolist()
        elif pd.api.types.is_float_dtype(column):
            rounded = column.round(4)
            columns[name] = [None if math.isnan(v) else v for v in rounded.tolist()]
        else:
            columns[name] = [_jsonable(v) for v in column.tolist()]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
