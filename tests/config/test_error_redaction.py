"""Clients see what failed (an exception class), never the exception's text; admin messages never
show the broker URL (it may carry a password and names internal hosts)."""

import pytest

from config.celery import BrokerUnavailable, app, broker_check
from privacy.models import PrivacyRequest, RequestKind, RequestState
from segments.models import Segment, SegmentKind, SegmentStatus

pytestmark = pytest.mark.django_db
RAW = 'OperationalError: connection to server at "10.0.0.5", port 5432 failed: password authentication failed'


def test_broker_unavailable_names_no_url_or_password(monkeypatch):
    unreachable = "redis://:hunter2@127.0.0.1:1/3"
    # the setting first: monkeypatch keeps the value it read to put back, and Celery reads the
    # environment variable before its setting, so the other order would keep the unreachable URL
    monkeypatch.setattr(app.conf, "broker_url", unreachable)
    monkeypatch.setenv("CELERY_BROKER_URL", unreachable)  # Celery reads this before its own setting

    with pytest.raises(BrokerUnavailable) as raised:
        broker_check(timeout=0.5)

    message = str(raised.value)
    assert "hunter2" not in message and "redis://" not in message and "127.0.0.1:1" not in message
    assert "redis-server" in message  # still says how to start it


def test_a_failed_segment_shows_the_client_the_error_class_only(make_api_client):
    segment = Segment.objects.create(name="s", kind=SegmentKind.RULE, rule="frequency > 1",
                                     status=SegmentStatus.FAILED, error=RAW)

    body = make_api_client("profiles:read").get(f"/api/v1/segments/{segment.pk}").json()

    assert body["error"] == "OperationalError"


def test_a_failed_privacy_request_shows_the_client_the_error_class_only(make_api_client):
    request = PrivacyRequest.objects.create(kind=RequestKind.ERASURE, state=RequestState.PARTIALLY_FAILED,
                                            source="default", subject_token="t" * 64, filed_by="x", error=RAW)

    body = make_api_client("compliance").get(f"/api/v1/privacy/requests/{request.pk}").json()

    assert body["error"] == "OperationalError"


def test_segment_refresh_records_the_error_class_with_its_text_for_operators():
    from segments import services

    segment = Segment.objects.create(name="s", kind=SegmentKind.LOOKALIKE, definition={"seed_keys": ["0" * 64]},
                                     status=SegmentStatus.PENDING)
    Segment.objects.filter(pk=segment.pk).update(definition={"broken": True})

    with pytest.raises(Exception):
        services.segment_refresh(segment_id=segment.pk)

    segment.refresh_from_db()
    assert segment.status == SegmentStatus.FAILED
    assert segment.error.split(":", 1)[0].isidentifier()
