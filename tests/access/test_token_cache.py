"""Tokens cached per process (access.token_cache): after a token's first request its next ones read
no token from the table; any change to a token, by the services or by any other connection, empties
the cache; expiry is checked on the cached token; inside a transaction, or without its listening
connection, the cache does not answer and every request reads the table."""

import select
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from access import services
from access.services import api_token_create, api_token_revoke
from access.token_cache import token_cache

# outside a test transaction: a NOTIFY is delivered only when its transaction commits
pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/api/v1/segments"


def _get(client, raw) -> tuple[int, int]:
    """The status and how many times the request read the token table."""
    with CaptureQueriesContext(connection) as captured:
        status = client.get(PATH, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code
    return status, sum("FROM access_apitoken WHERE prefix" in q["sql"] for q in captured.captured_queries)


def _other_connection():
    params = connection.get_connection_params()
    for unused in ("cursor_factory", "context"):
        params.pop(unused, None)
    return psycopg.connect(**params, autocommit=True)


def _notification_arrived(timeout: float = 5.0) -> bool:
    readable, _, _ = select.select([token_cache._listener.fileno()], [], [], timeout)
    return bool(readable)


@pytest.fixture
def token():
    return api_token_create(name="app", scopes=["profiles:read"])


def test_a_token_is_read_once_then_answered_from_the_cache(client, token):
    _, raw = token

    assert _get(client, raw) == (200, 1)
    assert _get(client, raw) == (200, 0)
    assert _get(client, raw) == (200, 0)


def test_revocation_through_the_services_is_refused_on_the_very_next_request(client, token):
    token, raw = token
    assert [_get(client, raw) for _ in range(2)] == [(200, 1), (200, 0)]

    api_token_revoke(token=token)

    assert _get(client, raw) == (401, 1)


@pytest.mark.parametrize("change, status", [
    ("revoked_at = now()", 401),
    ("expires_at = now() - interval '1 second'", 401),
    ("scopes = '{events:write}'", 403),
])
def test_a_change_made_by_another_connection_empties_the_cache_when_its_notification_arrives(client, token, change,
                                                                                           status):
    token, raw = token
    assert [_get(client, raw) for _ in range(2)] == [(200, 1), (200, 0)]

    with _other_connection() as other:
        other.execute(f"UPDATE access_apitoken SET {change} WHERE id = %s", [token.pk])
    assert _notification_arrived()

    assert _get(client, raw)[0] == status


def test_deleting_tokens_empties_the_cache(client, token):
    _, raw = token
    assert [_get(client, raw) for _ in range(2)] == [(200, 1), (200, 0)]

    with _other_connection() as other:
        other.execute("DELETE FROM access_apitoken")
    assert _notification_arrived()

    assert _get(client, raw) == (401, 1)


def test_the_stamp_of_use_alone_notifies_nobody(client, token):
    token, raw = token
    assert [_get(client, raw) for _ in range(2)] == [(200, 1), (200, 0)]

    with _other_connection() as other:
        other.execute("UPDATE access_apitoken SET last_used_at = now() WHERE id = %s", [token.pk])
    assert not _notification_arrived(timeout=0.3)

    assert _get(client, raw) == (200, 0)


def test_a_cached_token_that_expires_is_refused_without_reading_the_table(client, token, monkeypatch):
    token, raw = token
    assert [_get(client, raw) for _ in range(2)] == [(200, 1), (200, 0)]

    later = token.expires_at + timedelta(seconds=1)
    monkeypatch.setattr(services.timezone, "now", lambda: later)

    assert _get(client, raw) == (401, 0)


def test_inside_a_transaction_every_request_reads_the_table(client, token):
    token, raw = token
    assert [_get(client, raw) for _ in range(2)] == [(200, 1), (200, 0)]

    with transaction.atomic():
        assert _get(client, raw) == (200, 1)
        with connection.cursor() as cursor:
            cursor.execute("UPDATE access_apitoken SET revoked_at = %s WHERE id = %s", [timezone.now(), token.pk])
        assert _get(client, raw) == (401, 1)
        transaction.set_rollback(True)

    assert _get(client, raw)[0] == 200


def test_without_its_listening_connection_every_request_reads_the_table(client, token):
    token, raw = token
    assert [_get(client, raw) for _ in range(2)] == [(200, 1), (200, 0)]

    with _other_connection() as other:
        other.execute("SELECT pg_terminate_backend(%s)", [token_cache._listener.info.backend_pid])
        assert _notification_arrived()  # the server's goodbye: the socket turns readable
        assert [_get(client, raw) for _ in range(2)] == [(200, 1), (200, 1)]

        other.execute("UPDATE access_apitoken SET revoked_at = now() WHERE id = %s", [token.pk])

    assert _get(client, raw) == (401, 1)


def test_with_a_change_trigger_disabled_nothing_is_cached(client, token):
    token, raw = token
    with _other_connection() as other:
        other.execute("ALTER TABLE access_apitoken DISABLE TRIGGER access_apitoken_changed")
        try:
            token_cache.close()
            assert [_get(client, raw) for _ in range(3)] == [(200, 1), (200, 1), (200, 1)]
            other.execute("UPDATE access_apitoken SET revoked_at = now() WHERE id = %s", [token.pk])
            assert _get(client, raw) == (401, 1)
        finally:
            other.execute("ALTER TABLE access_apitoken ENABLE TRIGGER access_apitoken_changed")
