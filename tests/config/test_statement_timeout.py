"""Web requests run under WEB_STATEMENT_TIMEOUT_MS: a query past it is cancelled by PostgreSQL and
the request answers 503 naming the limit with Retry-After (never a hung worker, never a 500), and
the next request on the same process works. Workers have no such limit."""

import pytest
from django.db import connection

from config.statement_timeout import web_statement_timeout_install, web_statement_timeout_uninstall
from segments import selectors

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def web_process(settings):
    settings.WEB_STATEMENT_TIMEOUT_MS = 200
    web_statement_timeout_install()
    connection.close()  # the next query opens a connection with the limit
    yield
    web_statement_timeout_uninstall()
    connection.close()


def _show_timeout() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        return cursor.fetchone()[0]


def test_a_web_connection_carries_the_limit_and_a_worker_connection_does_not(settings):
    connection.close()
    assert _show_timeout() == "0"  # a worker or command: no limit
    settings.WEB_STATEMENT_TIMEOUT_MS = 200
    web_statement_timeout_install()
    try:
        connection.close()
        assert _show_timeout() == "200ms"
    finally:
        web_statement_timeout_uninstall()
        connection.close()


def test_a_query_past_the_limit_answers_503_naming_it(web_process, make_api_client, monkeypatch):
    client = make_api_client("segments:write")

    def slow_rule_check(*, rule):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")
        return {}

    monkeypatch.setattr(selectors, "segment_rule_check", slow_rule_check)
    response = client.post("/api/v1/segments/rules/check", {"rule": "events >= 1"}, format="json")

    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["error"] == "statement_timeout" and "WEB_STATEMENT_TIMEOUT_MS (200 ms)" in response.json()["detail"]
    monkeypatch.undo()
    assert client.post("/api/v1/segments/rules/check", {"rule": "events >= 1"}, format="json").status_code == 200
