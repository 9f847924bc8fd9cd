"""Reads for the CLV model, the risk scorecard and demand: purchases as the pure models want them,
order behaviour per customer, and what the admin and API show."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
from django.db import connection

from config.compiled_query import CompiledQuery, Slot
from crm.models import CategoryDemand, ClvFit, CustomerPrediction, DemandForecast
from crm.risk import OrderBehaviour
from ingestion.models import EventType

EPOCH = date(1970, 1, 1)
# ingested_at is its transaction's start: an order whose import began before a re-score but
# committed after it is older than that forecast, yet unseen by it. Minutes cover any import chunk.
RESCORE_MARGIN = timedelta(minutes=5)


def day_number(moment: datetime | date) -> int:
    """Days since 1970-01-01 (UTC), the `day` of the pure models' purchase frames."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC).date()
    return (moment - EPOCH).days


def day_start(day: int) -> datetime:
    return datetime.combine(EPOCH + timedelta(days=int(day)), datetime.min.time(), tzinfo=UTC)


_PURCHASES_SQL = f"""
SELECT e.customer_id AS customer,
       ((e.occurred_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01') AS day,
       coalesce(sum(e.value), 0)::float8 AS amount,
       sum(e.quantity)::float8 AS quantity
FROM ingestion_event e
JOIN ingestion_customer c ON c.id = e.customer_id
WHERE e.event_type = {EventType.PURCHASE} AND c.consent_profiling AND c.merged_into_id IS NULL
  {{customers}}
GROUP BY 1, 2
ORDER BY 1, 2
"""


def purchase_days_read(*, customer_ids: list[int] | None = None) -> pd.DataFrame:
    """One row per customer and day with a purchase (customer, day, amount, quantity). Customers who
    refused profiling and identities merged into another are left out."""
    params: list = []
    customers = ""
    if customer_ids is not None:
        customers, params = "AND e.customer_id = ANY(%s)", [list(map(int, customer_ids))]
    with connection.cursor() as cursor:
        cursor.execute(_PURCHASES_SQL.format(customers=customers), params)
        rows = cursor.fetchall()
    return pd.DataFrame(rows, columns=["customer", "day", "amount", "quantity"]).astype(
        {"customer": "int64", "day": "int64", "amount": "float64", "quantity": "float64"})


_BEHAVIOUR_SQL = f"""
SELECT customer_id,
       count(*) FILTER (WHERE event_type = {EventType.PURCHASE}),
       coalesce(sum(value) FILTER (WHERE event_type = {EventType.PURCHASE}), 0)::float8,
       count(*) FILTER (WHERE event_type = {EventType.REFUND}),
       coalesce(sum(abs(value)) FILTER (WHERE event_type = {EventType.REFUND}), 0)::float8,
       count(*) FILTER (WHERE event_type = {EventType.CANCEL}),
       count(*) FILTER (WHERE event_type = {EventType.REFUND} AND context->>'reason' = 'chargeback'),
       min(occurred_at) FILTER (WHERE event_type = {EventType.PURCHASE}),
       (array_agg(value ORDER BY occurred_at, arrival) FILTER (WHERE event_type = {EventType.PURCHASE}))[1]::float8
FROM ingestion_event
WHERE customer_id = ANY(%s)
  AND event_type IN ({EventType.PURCHASE}, {EventType.REFUND}, {EventType.CANCEL})
GROUP BY customer_id
"""


def order_behaviour_read(*, customer_ids: list[int], as_of: datetime) -> dict[int, OrderBehaviour]:
    """What the risk scorecard reads: purchases, refunds, cancellations and chargebacks per customer."""
    if not customer_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_BEHAVIOUR_SQL, [list(map(int, customer_ids))])
        rows = cursor.fetchall()
    behaviour = {}
    for customer_id, purchases, value, refunds, refunded, cancels, chargebacks, first_at, first_value in rows:
        behaviour[customer_id] = OrderBehaviour(
            purchases=purchases, purchased_value=value, refunds=refunds, refunded_value=refunded,
            cancellations=cancels, chargebacks=chargebacks,
            days_since_first_purchase=None if first_at is None else (as_of - first_at).total_seconds() / 86400,
            first_order_value=first_value,
        )
    return behaviour


def customers_with_new_orders(*, customer_ids: list[int]) -> list[int]:
    """Of these customers, those whose forecast is out of date: a purchase, refund or cancellation
    arrived after it was computed, or they have such an event and no forecast. Views, carts and
    ratings change no forecast, so a refresh after them need not re-score."""
    if not customer_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(f"""
            SELECT DISTINCT e.customer_id
            FROM ingestion_event e
            LEFT JOIN crm_customerprediction p ON p.customer_id = e.customer_id
            WHERE e.customer_id = ANY(%s)
              AND e.event_type IN ({EventType.PURCHASE}, {EventType.REFUND}, {EventType.CANCEL})
              AND (p.customer_id IS NULL OR e.ingested_at > p.computed_at - %s)
        """, [list(map(int, customer_ids)), RESCORE_MARGIN])
        return sorted(row[0] for row in cursor.fetchall())


def median_order_value() -> float:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY value)::float8 FROM ingestion_event "
                       f"WHERE event_type = {EventType.PURCHASE} AND value IS NOT NULL")
        (median,) = cursor.fetchone()
    return float(median or 0.0)


def purchase_lines_read() -> pd.DataFrame:
    """Purchase events with their item's top-level category, as `crm.demand` wants them: customer,
    day, category, amount, quantity (one row per purchased line). Lines without an item count under
    "—", so the demand totals still add up to the purchases."""
    with connection.cursor() as cursor:
        cursor.execute(f"""
            SELECT e.customer_id, ((e.occurred_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01'),
                   coalesce(nullif(split_part(i.category_path, '/', 1), ''), '—'),
                   coalesce(e.value, 0)::float8, e.quantity::float8
            FROM ingestion_event e
            JOIN ingestion_customer c ON c.id = e.customer_id
            LEFT JOIN ingestion_item i ON i.id = e.item_id
            WHERE e.event_type = {EventType.PURCHASE} AND c.consent_profiling AND c.merged_into_id IS NULL
        """)
        rows = cursor.fetchall()
    return pd.DataFrame(rows, columns=["customer", "day", "category", "amount", "quantity"]).astype(
        {"customer": "int64", "day": "int64"})


def clv_fit_latest() -> ClvFit | None:
    return ClvFit.objects.order_by("-created_at", "-pk").first()


# what a prediction is shown with of its fit: not the fit's model (its trees are ~330 KB in one row,
# which every profile request read and decoded, ~1 ms of it) nor its back-test
_FIT_SHOWN = ("fit__horizon_days", "fit__thresholds", "fit__created_at")


def _prediction_of(customer_id):
    own = [field.name for field in CustomerPrediction._meta.concrete_fields]
    query = CustomerPrediction.objects.filter(customer_id=customer_id).select_related("fit").only(*own, *_FIT_SHOWN)
    return (query if query.ordered else query.order_by("pk"))[:1]  # as .first() orders


# read on every profile request: compiled once per process (config.compiled_query)
_PREDICTION_OF_CUSTOMER = CompiledQuery(_prediction_of, customer_id=Slot(-2_000_000_001))


def customer_prediction_get(*, customer_id: int) -> CustomerPrediction | None:
    found = _PREDICTION_OF_CUSTOMER.instances(customer_id=customer_id)
    return found[0] if found else None


def demand_forecast_latest() -> DemandForecast | None:
    return DemandForecast.objects.order_by("-created_at", "-pk").first()


def demand_table(*, forecast: DemandForecast) -> tuple[list, list[dict]]:
    """(week starts, one row per category with its weekly expected purchases and total), biggest first."""
    rows = list(CategoryDemand.objects.filter(forecast=forecast).order_by("category", "week_start")
                .values("category", "week_start", "expected_purchases", "naive_purchases"))
    weeks = sorted({row["week_start"] for row in rows})
    by_category: dict[str, dict] = {}
    for row in rows:
        entry = by_category.setdefault(row["category"], {"category": row["category"], "weeks": {}, "total": 0.0,
                                                         "naive_total": 0.0})
        entry["weeks"][row["week_start"]] = row["expected_purchases"]
        entry["total"] += row["expected_purchases"]
        entry["naive_total"] += row["naive_purchases"] or 0.0
    table = sorted(by_category.values(), key=lambda e: -e["total"])
    for entry in table:
        entry["series"] = [entry["weeks"].get(week, 0.0) for week in weeks]
    return weeks, table
