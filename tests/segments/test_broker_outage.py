"""Redis away while a client asks for a segment refresh (which must queue a task): the API answers
503 with Retry-After, as for a lost database, never 500; once Redis answers, the request succeeds."""

import pytest
import redis

from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_segment_refresh_answers_503_with_retry_after_while_redis_is_away(make_api_client, monkeypatch):
    client = make_api_client("segments:write")
    created = client.post("/api/v1/segments", {"name": "everyone", "kind": "rule", "rule": "events >= 1"}, format="json")
    segment_id = created.json()["id"]
    nobody = redis.Redis(port=free_port(), socket_connect_timeout=1)  # a port nothing listens on

    with monkeypatch.context() as patch:
        patch.setattr("segments.tasks.broker_redis", lambda: nobody)
        away = client.post(f"/api/v1/segments/{segment_id}/refresh")

    assert away.status_code == 503
    assert away["Retry-After"] == "5"
    assert away.json()["error"] == "broker_unavailable"
    back = client.post(f"/api/v1/segments/{segment_id}/refresh")
    assert back.status_code == 202 and back.json()["refresh"] == "already_queued"  # creating it queued one
