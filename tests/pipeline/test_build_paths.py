"""The inline and Celery paths of a batch build run the same flows: on the same shop they end with
the same profiles, forecasts and audience segments (pipeline.flows: build → CLV fit → demand →
audiences; the Celery path is a chord whose callback queues the same refit)."""

import time

import pytest
from django.core.management import call_command

from crm.models import ClvFit, CustomerPrediction, DemandForecast
from ingestion.import_jobs import synthetic_shop_load
from pipeline import flows
from profiles.models import BuildStatus, Profile, ProfileBuild
from segments.models import Segment, SegmentMembership, SegmentSnapshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _state() -> dict:
    profiles = {
        p.customer_id: {"traits": p.traits, "labels": (p.value_tier, p.lifecycle_stage),
                        "vector": [float(v) for v in p.feature_vector]}
        for p in Profile.objects.all()
    }
    predictions = {
        p.customer_id: {"numbers": (p.expected_purchases, p.churn_probability, p.expected_spend),
                        "labels": (sorted(p.audiences), p.risk_band)}
        for p in CustomerPrediction.objects.all()
    }
    audiences = {
        s.name: sorted(SegmentMembership.objects.filter(segment=s).values_list("customer_id", flat=True))
        for s in Segment.objects.filter(name__in=flows.AUDIENCE_SEGMENT_NAMES.values())
    }
    return {"profiles": profiles, "predictions": predictions, "audiences": audiences}


def _same(a, b) -> bool:
    """Equal, numbers to 1e-6 relative: chunked SQL sums on workers may add floats in another order."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-6)
    return a == b


def _differences(inline: dict, celery: dict | None) -> dict:
    """What differs of one customer's state, inline against Celery (a failure names it, not just the id)."""
    celery = celery or {}
    return {name: (value, celery.get(name)) for name, value in inline.items() if not _same(celery.get(name), value)}


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
    for part in ("profiles", "predictions"):
        different = [c for c in inline[part] if not _same(celery[part].get(c), inline[part][c])]
        assert celery[part].keys() == inline[part].keys() and different == [], (
            f"{part} differ for {different[:5]}, the first in {_differences(inline[part][different[0]], celery[part].get(different[0]))}")
    assert celery["audiences"] == inline["audiences"]


def test_what_landed_events_call_for_is_one_rule_for_both_paths(settings):
    from profiles.tasks import events_landed_queue

    settings.PROFILE_REFRESH_MAX_CUSTOMERS = 50
    synthetic_shop_load(customers=120, events=6_000, seed=5)
    some = list(Profile.objects.values_list("customer_id", flat=True)[:3])
    assert some == []  # nothing profiled yet
    assert flows.events_landed_action(customers=0, bulk=True) == flows.LandedAction.NONE
    assert flows.events_landed_action(customers=3, bulk=False) == flows.LandedAction.NONE  # API trickle waits
    assert flows.events_landed_action(customers=3, bulk=True) == flows.LandedAction.BUILD  # a file import builds

    flows.profiles_build()
    ids = sorted(Profile.objects.values_list("customer_id", flat=True))
    assert flows.events_landed_action(customers=3, bulk=False) == flows.LandedAction.REFRESH
    assert flows.events_landed_action(customers=51, bulk=False) == flows.LandedAction.BUILD
    # the inline path refreshes in this process; the queueing path decides the same without a worker
    assert flows.events_landed(customer_ids=ids[:3], bulk=False) == {
        "customers": 3, "action": flows.LandedAction.REFRESH, "profiles": 3}
    assert events_landed_queue(customer_ids=ids[:3], bulk=False)["action"] == flows.LandedAction.REFRESH


def test_an_import_on_the_command_line_refreshes_its_customers_in_the_same_process(tmp_path):
    """No worker here: `import_events` runs the inline path of the same rule, so the imported
    customer's profile counts the new events when the command returns."""
    synthetic_shop_load(customers=120, events=6_000, seed=6)
    flows.profiles_build()
    from ingestion.pseudonyms import customer_key

    external_id = "C0000007"
    profile = Profile.objects.get(customer__key=customer_key(source="synthetic", external_id=external_id))
    before = profile.events_included
    data = tmp_path / "more.csv"
    data.write_text("customer_id,event_type,item_id,timestamp\n"
                    f"{external_id},view,sku-1,2025-03-01T10:00:00Z\n{external_id},cart,sku-1,2025-03-01T10:05:00Z\n")

    call_command("import_events", str(data), "--format", "csv", "--source", "synthetic")

    assert Profile.objects.get(pk=profile.pk).events_included == before + 2
    call_command("import_events", str(data), "--format", "csv", "--source", "synthetic", "--no-profiles")
