"""Reads: item recommendations for a profile.

- With a learned embedding: items ranked by user · item score under the profile's model version
  (the model's own next-item logit, up to a positive factor per customer), through the item
  vectors' HNSW inner-product index.
- Cold start (no embedding, or a model without item vectors): the items most bought in the last
  POPULAR_DAYS of the store, first in the customer's preferred categories, then overall.
Items the customer already bought or rated are never recommended. With `max_per_category`, no more
than that many items share a top-level category (greedy, in score order), for variety.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connections, router, transaction
from redis import RedisError

from ingestion.models import Event, EventType, Item
from profiles.models import Profile

POPULAR_DAYS = 90
POPULAR_CACHE_SECONDS = 600
POPULAR_PER_CATEGORY = 200
# candidates read per requested item when diversity may skip some
DIVERSITY_OVERFETCH = 5
CONSUMED = (EventType.PURCHASE, EventType.RATING)


@dataclass(frozen=True)
class Recommendation:
    item: Item
    score: float
    reason: str  # "embedding" | "popular_in_category" | "popular"


@dataclass(frozen=True)
class Recommendations:
    method: str  # "embedding" | "popular"
    model_version_id: int | None
    items: list[Recommendation]


def _reading():
    """The connection reads go to (a replica's in a replica-read scope, config.db_router)."""
    return connections[router.db_for_read(Event)]


def _consumed_items(customer_id: int) -> list[int]:
    with _reading().cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT item_id FROM ingestion_event WHERE customer_id = %s AND item_id IS NOT NULL"
            " AND event_type = ANY(%s)",
            [customer_id, list(CONSUMED)],
        )
        return [row[0] for row in cursor.fetchall()]


def _by_embedding(profile: Profile, exclude: list[int], limit: int) -> list[tuple[int, float]]:
    from training.models import ItemEmbedding

    if not ItemEmbedding.objects.filter(model_version_id=profile.model_version_id).exists():
        return []
    vector = "[" + ",".join(f"{v:.7g}" for v in profile.embedding) + "]"
    reading = _reading()
    with transaction.atomic(using=reading.alias), reading.cursor() as cursor:
        # the breadth of similarity search (SIMILARITY_EF_SEARCH): the walk also has to step over every
        # item the customer already bought or rated. SET LOCAL, which a Citus coordinator passes on to
        # the nodes, unlike set_config() (profiles.selectors)
        cursor.execute(f"SET LOCAL hnsw.ef_search = {int(min(1000, max(settings.SIMILARITY_EF_SEARCH, limit)))}")
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute(
            "SELECT item_id, -(embedding <#> %s::vector) FROM training_itemembedding"
            " WHERE model_version_id = %s AND NOT (item_id = ANY(%s))"
            " ORDER BY embedding <#> %s::vector LIMIT %s",
            [vector, profile.model_version_id, exclude, vector, limit],
        )
        rows = cursor.fetchall()
    return sorted(((item_id, float(score)) for item_id, score in rows), key=lambda r: -r[1])


def popular_items() -> dict:
    """Purchase counts over the store's last POPULAR_DAYS: the top items overall and per top-level
    category. Cached for POPULAR_CACHE_SECONDS (one aggregate over recent events, not per request)."""
    try:
        cached = cache.get("recommendations:popular")
    except RedisError:  # the cache is away: compute it (README "Reliability")
        cached = None
    if cached is not None:
        return cached
    with _reading().cursor() as cursor:
        cursor.execute("SELECT max(occurred_at) FROM ingestion_event")
        (latest,) = cursor.fetchone()
        rows = []
        if latest is not None:
            cursor.execute(
                """
                WITH counts AS (
                    SELECT item_id, count(*) AS n FROM ingestion_event
                    WHERE occurred_at >= %s AND item_id IS NOT NULL AND event_type = ANY(%s)
                    GROUP BY item_id
                ), ranked AS (
                    SELECT c.item_id, c.n, split_part(i.category_path, '/', 1) AS category,
                           row_number() OVER (PARTITION BY split_part(i.category_path, '/', 1) ORDER BY c.n DESC, c.item_id) AS r
                    FROM counts c JOIN ingestion_item i ON i.id = c.item_id
                )
                SELECT item_id, n, category FROM ranked WHERE r <= %s ORDER BY n DESC, item_id
                """,
                [latest - timedelta(days=POPULAR_DAYS), list(CONSUMED), POPULAR_PER_CATEGORY],
            )
            rows = cursor.fetchall()
    total = sum(n for _, n, _ in rows) or 1
    popular = {"overall": [(i, n / total) for i, n, _ in rows[:POPULAR_PER_CATEGORY]], "by_category": {}}
    for item_id, n, category in rows:
        popular["by_category"].setdefault(category, []).append((item_id, n / total))
    with contextlib.suppress(RedisError):
        cache.set("recommendations:popular", popular, POPULAR_CACHE_SECONDS)
    return popular


def _by_popularity(profile: Profile, exclude: set[int], limit: int) -> list[tuple[int, float, str]]:
    popular = popular_items()
    preferred = [c["name"] for c in (profile.traits.get("top_categories") or []) if c.get("name")]
    picked: list[tuple[int, float, str]] = []
    seen = set(exclude)
    for category in preferred:
        for item_id, share in popular["by_category"].get(category, []):
            if item_id not in seen:
                picked.append((item_id, share, "popular_in_category"))
                seen.add(item_id)
    for item_id, share in popular["overall"]:
        if item_id not in seen:
            picked.append((item_id, share, "popular"))
            seen.add(item_id)
    return picked[:limit]


def _diversified(candidates: list[tuple[int, float, str]], categories: dict[int, str], k: int,
                 max_per_category: int | None) -> list[tuple[int, float, str]]:
    if not max_per_category:
        return candidates[:k]
    chosen, per_category = [], {}
    for candidate in candidates:
        category = categories.get(candidate[0], "")
        if per_category.get(category, 0) < max_per_category:
            chosen.append(candidate)
            per_category[category] = per_category.get(category, 0) + 1
            if len(chosen) == k:
                break
    return chosen


def recommendations_for(*, profile: Profile, k: int = 10, max_per_category: int | None = None) -> Recommendations:
    consumed = _consumed_items(profile.pk)
    limit = k * DIVERSITY_OVERFETCH if max_per_category else k
    method, candidates = "popular", []
    if profile.embedding is not None and profile.model_version_id:
        scored = _by_embedding(profile, consumed, limit)
        if scored:
            method, candidates = "embedding", [(i, s, "embedding") for i, s in scored]
    if not candidates:
        candidates = _by_popularity(profile, set(consumed), limit)
    items = Item.objects.in_bulk([c[0] for c in candidates])
    categories = {pk: item.category_path.split("/", 1)[0] for pk, item in items.items()}
    chosen = _diversified(candidates, categories, k, max_per_category)
    return Recommendations(
        method=method, model_version_id=profile.model_version_id if method == "embedding" else None,
        items=[Recommendation(item=items[i], score=s, reason=r) for i, s, r in chosen if i in items],
    )
