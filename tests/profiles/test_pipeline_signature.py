"""The stored feature-set pipeline is unpickled only under an HMAC keyed with SECRET_KEY: a plain
SHA-256 stored beside it proves nothing to someone who can write both columns."""

import hashlib

import numpy as np
import pytest
from django.test import override_settings

from profiles import feature_sets, preprocessing
from profiles.models import FeatureSet

pytestmark = pytest.mark.django_db


def _fitted_pipeline_blob() -> tuple[bytes, str]:
    matrix = np.random.default_rng(0).normal(size=(50, 3))
    return feature_sets.feature_set_pipeline_dump(preprocessing.pipeline_fit(matrix, ["a", "b", "c"], components=2))


def _stored(blob: bytes, signature: str) -> FeatureSet:
    return FeatureSet.objects.create(version=1, feature_names=["a", "b", "c"], pipeline=blob, pipeline_sha256=signature)


def test_a_pipeline_signed_by_the_store_loads():
    blob, signature = _fitted_pipeline_blob()
    feature_set = _stored(blob, signature)

    pipeline = feature_sets.feature_set_pipeline(feature_set.pk, feature_set.pipeline_sha256)

    assert pipeline.transform(np.zeros((1, 3))).shape == (1, 2)


def test_a_replaced_pipeline_with_its_plain_sha256_is_refused():
    blob, _ = _fitted_pipeline_blob()
    forged = blob + b"\x00"  # anything the attacker wants unpickled
    feature_set = _stored(forged, hashlib.sha256(forged).hexdigest())

    with pytest.raises(preprocessing.PipelineIntegrityError):
        feature_sets.feature_set_pipeline(feature_set.pk, feature_set.pipeline_sha256)


def test_a_pipeline_signed_under_a_retired_secret_key_still_loads_from_the_fallbacks():
    with override_settings(SECRET_KEY="old-" + "k" * 50):
        blob, signature = _fitted_pipeline_blob()
    feature_set = _stored(blob, signature)

    with override_settings(SECRET_KEY="new-" + "k" * 50, SECRET_KEY_FALLBACKS=["old-" + "k" * 50]):
        assert feature_sets.feature_set_pipeline(feature_set.pk, feature_set.pipeline_sha256) is not None
    feature_sets.feature_set_pipeline.cache_clear()
    with override_settings(SECRET_KEY="new-" + "k" * 50, SECRET_KEY_FALLBACKS=[]):
        with pytest.raises(preprocessing.PipelineIntegrityError):
            feature_sets.feature_set_pipeline(feature_set.pk, feature_set.pipeline_sha256)
