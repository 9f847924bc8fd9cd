"""config.postgresql: the health check of a reused connection costs no round trip while the server
has said nothing, and still finds a connection the server ended, so the next request reconnects."""

import time

import psycopg
import pytest
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)


def _other_connection():
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


def _last_query_of(pid: int) -> str | None:
    with _other_connection() as other:
        row = other.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return row[0] if row else None


def test_the_engine_is_the_project_backend():
    assert connection.settings_dict["ENGINE"] == "config.postgresql"
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True


def test_a_healthy_idle_connection_is_usable_without_a_query():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'before the health check'")
    pid = connection.connection.info.backend_pid

    assert connection.is_usable()
    # the backend's last statement is still the test's: no SELECT 1 was sent
    assert _last_query_of(pid) == "SELECT 'before the health check'"


def test_a_connection_the_server_ended_is_found_and_replaced():
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    with _other_connection() as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 10
    while _last_query_of(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)

    assert not connection.is_usable()
    # what Django does at a request's first query with CONN_HEALTH_CHECKS: close, then connect anew
    connection.health_check_done = False
    connection.close_if_health_check_failed()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_inside_a_transaction_the_check_asks_the_server():
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SELECT 'in a transaction'")
        pid = connection.connection.info.backend_pid
        assert connection.is_usable()
        assert _last_query_of(pid) == "SELECT 1"
        cursor.execute("ROLLBACK")
