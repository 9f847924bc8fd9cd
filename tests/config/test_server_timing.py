"""The Server-Timing header (config.server_timing): app, database and CPU milliseconds when SERVER_TIMING
is on, no header when it is off."""

import re

import pytest

pytestmark = pytest.mark.django_db

HEADER = re.compile(r"^app;dur=(\d+\.\d\d), db;dur=(\d+\.\d\d), cpu;dur=(\d+\.\d\d)$")


def test_server_timing_reports_app_time_with_the_database_time_inside_it(client, settings):
    settings.SERVER_TIMING = True

    response = client.get("/healthz")

    match = HEADER.match(response["Server-Timing"])
    assert match, response["Server-Timing"]
    app_ms, db_ms, cpu_ms = float(match[1]), float(match[2]), float(match[3])
    # /healthz asks the database, so some of the request's time was spent there, never more than all of it
    assert 0 < db_ms <= app_ms
    # the thread's CPU time is part of the request's time (it waited for the database besides)
    assert 0 < cpu_ms <= app_ms


def test_no_server_timing_header_unless_asked_for(client, settings):
    settings.SERVER_TIMING = False

    assert "Server-Timing" not in client.get("/healthz")
