"""config.model_fields.PipelineJSONField: read with orjson, the same values Django's JSONField reads;
what orjson refuses goes through Django's path."""

import json

import pytest
from django.db import models
from django.utils import timezone

from config.model_fields import PipelineJSONField

DOCUMENT = {"percentiles": {"net_monetary": [0.0, 12.5, 1e-7, -3.25]}, "as_of": "2026-12-01T00:00:00+00:00",
            "flags": [True, False, None], "中文": "类别", "count": 9_007_199_254_740_993}


def test_it_reads_what_djangos_jsonfield_reads():
    text = json.dumps(DOCUMENT)

    assert PipelineJSONField().from_db_value(text, None, None) == models.JSONField().from_db_value(text, None, None)


def test_what_orjson_refuses_is_read_by_django():
    # a number beyond a double: orjson refuses it, the standard library reads infinity
    assert PipelineJSONField().from_db_value("[1e400]", None, None) == [float("inf")]
    # text that is not JSON at all comes back as it is, as Django's JSONField does
    assert PipelineJSONField().from_db_value("not json", None, None) == "not json"
    assert PipelineJSONField().from_db_value(None, None, None) is None


def test_a_field_with_its_own_decoder_keeps_it():
    class Marked(json.JSONDecoder):
        def decode(self, s, *args, **kwargs):
            return {"decoded_by": "own decoder"}

    assert PipelineJSONField(decoder=Marked).from_db_value("{}", None, None) == {"decoded_by": "own decoder"}


@pytest.mark.django_db
def test_a_profile_reads_back_what_was_written():
    from ingestion.models import Customer
    from profiles.models import FeatureSet, Profile

    customer = Customer.objects.create(key="c" * 64)
    feature_set = FeatureSet.objects.create(version=1, feature_names=["a"], pipeline=b"", pipeline_sha256="0" * 64,
                                            population=DOCUMENT)
    Profile.objects.create(customer=customer, feature_set=feature_set, traits=DOCUMENT, explanation={"top": []},
                           snapshot_at=timezone.now())

    read = Profile.objects.select_related("feature_set").get(customer=customer)

    assert read.traits == DOCUMENT and read.feature_set.population == DOCUMENT and read.explanation == {"top": []}
