"""Reads behind the operators' picture pages: one customer's profile page (activity, spend,
categories, percentiles against the population), the embedding map and the feature report."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
from django.db import connection
from django.db.models import QuerySet

from ingestion.models import EventType
from profiles.models import FeatureSet, Profile
from profiles.selectors import SPACES, _percentile_of, profiles_comparable_active

ACTIVITY_DAYS = 90
CATEGORY_LIMIT = 10
MAP_SAMPLE = 3000
POPULATION_SAMPLE = 600
MAP_COLOURINGS = ("value_tier", "lifecycle_stage", "segment")


def profile_activity_by_day(*, customer_id: int, days: int = ACTIVITY_DAYS) -> dict:
    """Events per day and type over the customer's last `days` days of activity (ending at their
    newest event, so a historical shop still shows something): {"days": [date], "series":
    {event type: [count per day]}}. Reads the (customer, occurred_at) index only."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(occurred_at) FROM ingestion_event WHERE customer_id = %s", [customer_id])
        (latest,) = cursor.fetchone()
        if latest is None:
            return {"days": [], "series": {}}
        start = (latest - timedelta(days=days - 1)).date()
        cursor.execute(
            """
            SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, event_type, count(*)
            FROM ingestion_event WHERE customer_id = %s AND occurred_at >= %s
            GROUP BY 1, 2
            """,
            [customer_id, start],
        )
        rows = cursor.fetchall()
    day_list = [start + timedelta(days=i) for i in range((latest.date() - start).days + 1)]
    index = {day: i for i, day in enumerate(day_list)}
    series: dict[int, list[int]] = {}
    for day, event_type, count in rows:
        if day in index:
            series.setdefault(event_type, [0] * len(day_list))[index[day]] = count
    return {"days": day_list, "series": dict(sorted(series.items()))}


def profile_spend_by_month(*, customer_id: int) -> list[tuple[date, float]]:
    """Net spend per calendar month (purchases minus refunds), every month from the first to the
    last with either, empty months as 0."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month,
                   sum(CASE WHEN event_type = %s THEN coalesce(value, 0) ELSE -coalesce(value, 0) END)
            FROM ingestion_event WHERE customer_id = %s AND event_type = ANY(%s)
            GROUP BY 1 ORDER BY 1
            """,
            [EventType.PURCHASE, customer_id, [EventType.PURCHASE, EventType.REFUND]],
        )
        rows = {month: float(total) for month, total in cursor.fetchall()}
    if not rows:
        return []
    months, month = [], min(rows)
    while month <= max(rows):
        months.append((month, rows.get(month, 0.0)))
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return months


def profile_categories(*, customer_id: int, limit: int = CATEGORY_LIMIT) -> list[dict]:
    """The customer's top-level categories by events on their items: views, purchases and the rest."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT coalesce(nullif(split_part(i.category_path, '/', 1), ''), '—') AS category,
                   count(*) FILTER (WHERE e.event_type = %s),
                   count(*) FILTER (WHERE e.event_type = %s),
                   count(*) FILTER (WHERE e.event_type <> ALL(%s))
            FROM ingestion_event e JOIN ingestion_item i ON i.id = e.item_id
            WHERE e.customer_id = %s
            GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT %s
            """,
            [EventType.VIEW, EventType.PURCHASE, [EventType.VIEW, EventType.PURCHASE], customer_id, limit],
        )
        return [{"category": c, "views": v, "purchases": p, "other": o} for c, v, p, o in cursor.fetchall()]


def profile_trait_percentiles(*, profile: Profile) -> list[dict]:
    """Each numeric trait of the profile with its percentile in the population its feature set
    was fitted on (FeatureSet.population["percentiles"]: values at every 5th percentile)."""
    table = (profile.feature_set.population or {}).get("percentiles", {}) if profile.feature_set_id else {}
    out = []
    for name, grid in table.items():
        value = profile.traits.get(name)
        if isinstance(value, int | float) and np.isfinite(value) and grid:
            out.append({"name": name, "value": value, "percentile": round(_percentile_of(value, grid), 1)})
    return out


def _sampled_pks(*, size: int) -> list[int]:
    """About 3·size random profile keys from a block sample (TABLESAMPLE SYSTEM reads only that
    share of the table's pages), so a sample of a million profiles costs no full scan."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = 'profiles_profile'::regclass")
        estimate = cursor.fetchone()[0]
        percent = 100.0 if estimate <= 0 else min(100.0, 100.0 * 3 * size / estimate)
        cursor.execute("SELECT customer_id FROM profiles_profile TABLESAMPLE SYSTEM (%s) REPEATABLE (0)", [percent])
        return [row[0] for row in cursor.fetchall()]


def profiles_sample(*, candidates: QuerySet[Profile], size: int) -> QuerySet[Profile]:
    """Up to `size` of the candidates, spread over the table; the first ones when sampling found too few."""
    sampled = candidates.filter(pk__in=_sampled_pks(size=size)).order_by("pk")[:size]
    if len(sampled) >= min(size, 50):
        return sampled
    return candidates.order_by("pk")[:size]


def profiles_rfm_population(*, feature_set_id: int, size: int = POPULATION_SAMPLE) -> list[dict]:
    """Recency and net spend of a sample of profiles of one feature set: the cloud a customer is
    placed in."""
    candidates = Profile.objects.filter(feature_set_id=feature_set_id).select_related("customer")
    out = []
    for profile in profiles_sample(candidates=candidates.only("customer_id", "customer__key", "traits"), size=size):
        recency, spend = profile.traits.get("recency_days"), profile.traits.get("net_monetary")
        if isinstance(recency, int | float) and isinstance(spend, int | float):
            out.append({"customer_id": profile.pk, "key": profile.customer.key, "recency_days": recency, "net_monetary": spend})
    return out


def map_space_default() -> str | None:
    """The richest space that has vectors in the current coordinates: fused, then embedding, then traits."""
    for space in ("fused", "embedding", "traits"):
        if profiles_comparable_active(space=space).exists():
            return space
    return None


def profiles_map(*, space: str | None = None, colour_by: str = "value_tier", segment_id: int | None = None,
                 size: int = MAP_SAMPLE) -> dict:
    """A 2-D PCA projection of a sample of profiles' vectors in one space, each point with what a
    hover shows and the group it is coloured by (a label, or in/out of a segment).
    Returns {"space", "explained_variance", "points": [{customer_id, key, value_tier,
    lifecycle_stage, top_category, group, x, y}]}."""
    from sklearn.decomposition import PCA

    space = space if space in SPACES else map_space_default()
    if space is None:
        return {"space": None, "explained_variance": None, "points": []}
    column = SPACES[space]
    candidates = profiles_comparable_active(space=space).select_related("customer").only(
        "customer_id", "customer__key", "value_tier", "lifecycle_stage", "explanation", column,
    )
    profiles = list(profiles_sample(candidates=candidates, size=size))
    if len(profiles) < 3:
        return {"space": space, "explained_variance": None, "points": []}
    vectors = np.array([np.asarray(getattr(p, column), dtype="float64") for p in profiles])
    pca = PCA(n_components=2, random_state=0)
    xy = pca.fit_transform(vectors)
    members: set[int] = set()
    if colour_by == "segment" and segment_id is not None:
        from segments.models import SegmentMembership

        members = set(SegmentMembership.objects.filter(
            segment_id=segment_id, customer_id__in=[p.pk for p in profiles],
        ).values_list("customer_id", flat=True))
    points = []
    for profile, (x, y) in zip(profiles, xy, strict=True):
        top = (profile.explanation.get("top_categories") or [{}])[0].get("name", "")
        if colour_by == "segment":
            group = "member" if profile.pk in members else "other"
        elif colour_by == "lifecycle_stage":
            group = profile.lifecycle_stage
        else:
            group = profile.value_tier
        points.append({
            "customer_id": profile.pk, "key": profile.customer.key, "value_tier": profile.value_tier,
            "lifecycle_stage": profile.lifecycle_stage, "top_category": top, "group": group,
            "x": round(float(x), 4), "y": round(float(y), 4),
        })
    return {"space": space, "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4), "points": points}


def feature_report(*, feature_set: FeatureSet | None) -> dict:
    """Information gain per feature (best first) and the combinations tried, of one feature set."""
    report = (feature_set.report or {}) if feature_set else {}
    features = sorted(report.get("features", []), key=lambda f: f.get("rank", 0))
    return {
        "target": report.get("target"),
        "skipped": report.get("skipped"),
        "features": [f for f in features if isinstance(f.get("mutual_information"), int | float)],
        "combinations": report.get("combinations", []),
    }


def customer_keys_of_external_id(*, external_id: str) -> list[str]:
    """The pseudonyms an external id would have in each import source seen so far (sources come
    from the import ledger, a small table), under every pseudonym key of the ring."""
    from ingestion.pseudonyms import customer_keys
    from ingestion.models import ImportJob

    sources = set(ImportJob.objects.values_list("source", flat=True).distinct())
    return [key for source in sorted(sources) for key in customer_keys(source=source, external_id=external_id)]


def profile_similar_space(profile: Profile) -> str | None:
    for space in ("fused", "embedding", "traits"):
        if getattr(profile, SPACES[space]) is not None:
            return space
    return None


def profile_page(*, profile: Profile) -> dict:
    """Everything the profile page shows besides the customer's own attributes."""
    from profiles.recommendations import recommendations_for
    from profiles.selectors import profile_scores, profiles_similar
    from segments.selectors import segments_of_customer

    space = profile_similar_space(profile)
    neighbours = profiles_similar(profile=profile, k=10, space=space) if space else []
    return {
        "scores": profile_scores(profile) if profile.feature_set_id else {},
        "segments": segments_of_customer(customer_id=profile.pk),
        "top_categories": profile.explanation.get("top_categories", []),
        "distinctive_traits": profile.explanation.get("distinctive", []),
        "similar_space": space,
        "neighbours": neighbours,
        "recommendations": recommendations_for(profile=profile, k=10),
        "activity": profile_activity_by_day(customer_id=profile.pk),
        "spend": profile_spend_by_month(customer_id=profile.pk),
        "categories": profile_categories(customer_id=profile.pk),
        "percentiles": profile_trait_percentiles(profile=profile),
        "rfm_population": profiles_rfm_population(feature_set_id=profile.feature_set_id),
    }
