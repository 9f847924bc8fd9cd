"""Similarity over profiles in each vector space, and the fusion weight tuned when learned
embeddings exist."""

import numpy as np
import pytest
from django.db import connection

from profiles import selectors
from profiles import builds
from profiles import feature_sets
from profiles.models import Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def profiled(events_client):
    rows = []
    for c in range(80):
        heavy = c % 2 == 0
        for i in range(6 if heavy else 2):
            rows.append({"customer_id": f"c{c}", "event_type": "purchase" if heavy else "view",
                         "item_id": f"sku-{c % 3}", "timestamp": f"2025-01-{1 + (c + i) % 28:02d}T10:00:00Z",
                         **({"value": f"{10 + i}.00"} if heavy else {})})
        rows.append({"customer_id": f"c{c}", "event_type": "purchase" if c % 4 == 0 else "view", "item_id": "sku-1",
                     "timestamp": f"2025-02-{1 + c % 27:02d}T10:00:00Z", **({"value": "9.00"} if c % 4 == 0 else {})})
    assert events_client.post("/api/v1/events", {"events": rows}, format="json").status_code == 200
    builds.profiles_build()


@pytest.mark.parametrize("space", ["traits", "fused"])
def test_nearest_profiles_exclude_self_and_are_ordered_by_similarity(profiled, space):
    me = Profile.objects.order_by("customer_id").first()

    neighbours = selectors.profiles_similar(profile=me, k=5, space=space, ef_search=40)

    assert len(neighbours) == 5
    assert me.pk not in {p.pk for p, _ in neighbours}
    similarities = [s for _, s in neighbours]
    assert similarities == sorted(similarities, reverse=True)
    assert all(-1.0 <= s <= 1.0 + 1e-6 for s in similarities)


def test_the_fused_query_uses_its_hnsw_index(profiled):
    from pgvector.django import CosineDistance

    me = Profile.objects.order_by("customer_id").first()
    query = Profile.objects.annotate(d=CosineDistance("fused", me.fused)).order_by("d")[:5]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = query.explain()

    assert "profile_fused_hnsw" in plan


def test_embedding_search_is_empty_without_a_learned_embedding(profiled):
    me = Profile.objects.first()

    assert selectors.profiles_similar(profile=me, space="embedding") == []


def test_fusion_weight_is_tuned_on_embeddings_encoded_as_of_the_cutoff(profiled, settings, tmp_path):
    """With a learned model active, the feature-set fit tunes the fused vector's weight on the
    validation task (kNN AUC of a purchase in the 30 days after the cutoff) with embeddings the
    model encodes from events before the cutoff: the stored embeddings have seen February, the
    very purchases the task asks about. (The tuning rule itself: test_profile_math.)"""
    from datetime import datetime

    from profiles.fusion import WEIGHT_GRID
    from training.models import ModelVersion
    from pipeline.flows import training_run
    from training.services import customer_embeddings_encode, training_run_create

    settings.MODELS_DIR = tmp_path
    run = training_run_create(arch="gru", config={"model": {"layers": 1, "max_len": 20, "content": False},
                                                  "train": {"epochs": 2}})
    training_run(run_id=run.pk)

    feature_set = feature_sets.feature_set_fit()

    fusion = feature_set.report["fusion"]
    assert fusion["customers"] == 80
    assert set(fusion["auc_by_weight"]) == {str(w) for w in WEIGHT_GRID}
    assert feature_set.fusion_weight == fusion["weight"] and feature_set.fusion_weight in WEIGHT_GRID
    cutoff = datetime.fromisoformat(feature_set.report["cutoff"])
    me = Profile.objects.get(customer__key__in=_february_buyers(), customer_id=min(
        Profile.objects.filter(customer__key__in=_february_buyers()).values_list("customer_id", flat=True)))
    as_of_cutoff = customer_embeddings_encode(customer_ids=[me.pk], version=ModelVersion.objects.get(is_active=True),
                                              before=cutoff)[me.pk]
    assert not np.allclose(as_of_cutoff, me.embedding, atol=1e-4)


def _february_buyers() -> set[str]:
    from ingestion.pseudonyms import customer_key

    return {customer_key(source="default", external_id=f"c{c}") for c in range(0, 80, 4)}
