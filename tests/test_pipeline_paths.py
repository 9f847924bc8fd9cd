"""The inline and Celery paths of a batch build run the same flows: on the same shop they end with
the same profiles, forecasts and audience segments (pipeline.flows: build → CLV fit → demand →
audiences; the Celery path is a chord whose callback queues the same refit)."""

import json
import time

import pytest
from django.core.management import call_command

from crm.models import ClvFit, CustomerPrediction, DemandForecast
from ingestion.services import synthetic_shop_load
from pipeline import flows
from profiles.models import BuildStatus, Profile, ProfileBuild
from segments.models import Segment, SegmentMembership, SegmentSnapshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _state() -> dict:
    profiles = {
        p.customer_id: (json.dumps(p.traits, sort_keys=True), p.value_tier, p.lifecycle_stage,
                        [round(float(v), 4) for v in p.feature_vector])
        for p in Profile.objects.all()
    }
    predictions = {
        p.customer_id: (round(p.expected_purchases, 6), round(p.churn_probability, 6), sorted(p.audiences), p.risk_band)
        for p in CustomerPrediction.objects.all()
    }
    audiences = {
        s.name: sorted(SegmentMembership.objects.filter(segment=s).values_list("customer_id", flat=True))
        for s in Segment.objects.filter(name__in=flows.AUDIENCE_SEGMENT_NAMES.values())
    }
    return {"profiles": profiles, "predictions": predictions, "audiences": audiences}


def test_inline_and_celery_builds_end_with_the_same_profiles_forecasts_and_audiences(celery_worker):
    synthetic_shop_load(customers=400, events=30_000, seed=21)

    flows.profiles_build()
    inline = _state()
    assert ClvFit.objects.count() == DemandForecast.objects.count() == 1
    assert inline["predictions"] and len(inline["audiences"]) == len(flows.AUDIENCE_SEGMENT_NAMES)
    assert any(inline["audiences"].values())

    call_command("build_profiles", "--celery", "--chunk", "150")  # waits for the chord
    audiences = SegmentSnapshot.objects.filter(segment__name__in=flows.AUDIENCE_SEGMENT_NAMES.values())
    deadline = time.monotonic() + 180
    while audiences.count() < 2 * len(flows.AUDIENCE_SEGMENT_NAMES):  # the refit the callback queued, to its end
        assert time.monotonic() < deadline, "the Celery build's CLV refit did not finish"
        time.sleep(0.2)
    assert ClvFit.objects.count() == DemandForecast.objects.count() == 2
    celery = _state()

    assert ProfileBuild.objects.filter(status=BuildStatus.SUCCEEDED).count() == 2
    assert celery["profiles"] == inline["profiles"]
    assert celery["predictions"] == inline["predictions"]
    assert celery["audiences"] == inline["audiences"]
