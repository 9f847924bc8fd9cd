"""Reads of the profiles app."""

from __future__ import annotations

from profiles.models import Profile

ANONYMOUS_SUFFIX = ":anonymous"


def profile_get(*, key: str) -> Profile | None:
    """The profile of the customer with this pseudonymous key, or None (also for a customer merged
    into another: its profile lives on in the survivor's)."""
    return (
        Profile.objects.select_related("customer", "feature_set", "model_version")
        .defer("feature_set__pipeline")
        .filter(customer__key=key, customer__merged_into__isnull=True)
        .first()
    )


SPACES = {"traits": "feature_vector", "embedding": "embedding", "fused": "fused"}
EF_SEARCH_BOUNDS = (10, 1000)


def profiles_similar(*, profile: Profile, k: int = 10, space: str = "fused", ef_search: int = 100) -> list[tuple[Profile, float]]:
    """The k profiles nearest to this one by cosine similarity in one vector space — the
    standardised traits, the learned embedding, or their fusion — through the space's HNSW index.
    Self excluded; in the embedding space only vectors of the same model version are compared."""
    from django.db import connection, transaction
    from pgvector.django import CosineDistance

    column = SPACES[space]
    vector = getattr(profile, column)
    if vector is None:
        return []
    ef_search = min(max(int(ef_search), EF_SEARCH_BOUNDS[0]), EF_SEARCH_BOUNDS[1])
    candidates = Profile.objects.exclude(pk=profile.pk).exclude(**{f"{column}__isnull": True})
    if space == "embedding":
        candidates = candidates.filter(model_version_id=profile.model_version_id)
    query = candidates.annotate(distance=CosineDistance(column, vector)).order_by("distance")[:k]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef_search)])
        return [(p, 1.0 - p.distance) for p in query.select_related("customer")]
