"""Read replicas with a real streaming replica: a `pg_basebackup -R` of the tests' embedded server
(the test database is in the copied cluster), started on a free loopback port. The API's read-only
endpoints read from it once it has replayed; writers read their writes; the admin never reads from
it; a lagging or stopped replica is skipped; an erased subject never reappears through it."""

import copy
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.test.utils import CaptureQueriesContext

from config.broker_redis import broker_redis
from config.db_router import (
    CLIENT_WRITE_KEY, ERASURE_LSN_KEY, ERASURES_IN_FLIGHT_KEY, mark_key, primary_wal_lsn, replica_measure,
    replica_states_forget,
)
from config.embedded_db import embedded_replica_run, embedded_replica_start, embedded_replica_stop, postmaster_pid

# the replica's alias is allowed in these tests; as a test mirror of default it is never flushed (it is read-only)
ALIAS = "replica1"
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
MEASURE_SQL = "pg_last_wal_replay_lsn"  # the router's own look at the replica, not a read of data


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def replica_server(django_db_setup):
    """One replica for the module, made after the test database exists, as alias `replica1` of the
    test database configured as DATABASE_REPLICA_URLS would (read-only sessions); stopped and
    removed at the end."""
    if os.environ.get("DATABASE_URL"):
        pytest.skip("the replica is a pg_basebackup of the embedded server; DATABASE_URL names another server")
    port = _free_port()
    directory = Path(django_settings.BASE_DIR) / "var" / f"test-replica-{port}"
    started = time.monotonic()
    embedded_replica_start(django_settings.EMBEDDED_DATABASE_DIR, directory, port=port)
    assert time.monotonic() - started < 30
    config = copy.deepcopy(connections["default"].settings_dict)  # NAME: the test database
    config.update(HOST="127.0.0.1", PORT=str(port), USER="postgres", PASSWORD="",
                  OPTIONS={"options": "-c default_transaction_read_only=on", "connect_timeout": 2})
    config["TEST"] = {**config["TEST"], "MIRROR": "default"}
    connections.settings[ALIAS] = config
    try:
        yield {"directory": directory, "port": port}
    finally:
        connections[ALIAS].close()
        del connections[ALIAS]
        del connections.settings[ALIAS]
        embedded_replica_stop(directory)
        assert not directory.exists()


def _marks_clear():
    client = broker_redis()
    client.delete(mark_key(ERASURE_LSN_KEY), mark_key(ERASURES_IN_FLIGHT_KEY))
    stale = list(client.scan_iter(match=mark_key(CLIENT_WRITE_KEY, client="*")))
    if stale:
        client.delete(*stale)


@pytest.fixture
def replica(replica_server, settings):
    """The replica in DATABASE_REPLICAS for one test."""
    settings.DATABASE_REPLICAS = [ALIAS]
    settings.DATABASE_REPLICA_CHECK_MS = 100
    replica_states_forget()
    _marks_clear()
    yield replica_server
    _replay("resume", replica_server)
    connections[ALIAS].close()
    replica_states_forget()
    _marks_clear()


def _replay(action: str, server) -> None:
    """pg_wal_replay_pause() / pg_wal_replay_resume() on the replica, over a connection of its own."""
    if postmaster_pid(server["directory"]) is None:
        return
    with psycopg.connect(host="127.0.0.1", port=server["port"], user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        if action == "resume" or not conn.execute("SELECT pg_is_wal_replay_paused()").fetchone()[0]:
            conn.execute(f"SELECT pg_wal_replay_{action}()")


def _replayed(timeout: float = 20.0) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    target, deadline = primary_wal_lsn(), time.monotonic() + timeout
    while True:
        state = replica_measure(ALIAS, primary_lsn=target)
        if state.replay_lsn is not None and state.replay_lsn >= target:
            return
        assert time.monotonic() < deadline, f"the replica did not catch up: {state}"
        time.sleep(0.05)


@contextmanager
def _reads():
    """The data queries each side ran during the block: {"replica": [...], "primary": [...]}."""
    with CaptureQueriesContext(connections[ALIAS]) as on_replica, CaptureQueriesContext(connections["default"]) as on_primary:
        seen = {"replica": [], "primary": []}
        yield seen
    seen["replica"] = [q["sql"] for q in on_replica.captured_queries if MEASURE_SQL not in q["sql"]]
    seen["primary"] = [q["sql"] for q in on_primary.captured_queries if "pg_current_wal_lsn" not in q["sql"]]


def _profile_reads(seen, side: str) -> int:
    return sum("profiles_profile" in sql for sql in seen[side])


@pytest.fixture
def shop(make_shop):
    from profiles.models import Profile

    make_shop(customers=30, events=800, seed=17)
    return Profile.objects.select_related("customer").order_by("customer_id")


def test_read_only_endpoints_read_from_the_replica_once_it_has_replayed(replica, shop, make_api_client):
    from segments import services as segment_services

    segment = segment_services.segment_create_rule(name="everyone", rule="monetary >= 0", refresh="none")
    segment_services.segment_refresh(segment_id=segment.pk)
    reader = make_api_client("profiles:read", "similarity:read", "segments:exact")
    key = shop.first().customer.key
    _replayed()

    for path, expected in ((f"/api/v1/profiles/{key}", 200), (f"/api/v1/profiles/{key}/similar?k=3", 200),
                           (f"/api/v1/profiles/{key}/recommendations?k=3", 200),
                           (f"/api/v1/segments/{segment.pk}/members", 200),
                           ("/api/v1/demand/categories", 404)):  # no CLV fit yet: the replica says so too
        _replayed()  # whatever the primary wrote meanwhile (a busy machine's replica may trail it by seconds)
        with _reads() as seen:
            response = reader.get(path)
        assert response.status_code == expected, (path, response.content[:300])
        assert seen["replica"], f"{path} read nothing from the replica"
        assert not any(t in sql for sql in seen["primary"] for t in ("profiles_profile", "segments_", "crm_")), path
    assert reader.get(f"/api/v1/profiles/{key}").json()["key"] == key

    # the connection the reads used is a standby in a read-only session
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')")
        assert cursor.fetchone() == (True, "on")
    # and writes never go there: the write endpoints and the admin stay on the primary
    with _reads() as seen:
        created = make_api_client("segments:write").post(
            "/api/v1/segments", {"name": "big", "kind": "rule", "rule": "monetary > 100"}, format="json")
    assert created.status_code == 201, created.content
    assert not seen["replica"]


def test_a_writer_reads_its_own_writes_while_the_replica_is_behind(replica, shop, make_api_client, admin_client):
    writer = make_api_client("events:write", "profiles:read")
    bystander = make_api_client("profiles:read")
    profile = shop.first()
    key = profile.customer.key
    for client in (writer, bystander):  # tokens' last-use stamps are written before the replica pauses
        client.get(f"/api/v1/profiles/{key}")
    _replayed()
    _replay("pause", replica)

    event = {"event_id": "rr-1", "customer_id": "someone-new", "event_type": "view", "item_id": "sku-x",
             "timestamp": "2026-11-30T10:00:00Z"}
    assert writer.post("/api/v1/events", {"events": [event]}, format="json").status_code == 200
    with _reads() as seen:
        assert writer.get(f"/api/v1/profiles/{key}").status_code == 200
    assert _profile_reads(seen, "primary") and not _profile_reads(seen, "replica")  # behind its write: primary
    with _reads() as seen:
        assert bystander.get(f"/api/v1/profiles/{key}").status_code == 200
    assert _profile_reads(seen, "replica") and not _profile_reads(seen, "primary")  # wrote nothing: the replica

    # the admin writes and reads on the primary only: a token it just created is listed at once
    with _reads() as seen:
        response = admin_client.post("/admin/access/apitoken/add/", {
            "name": "made while the replica waits", "scopes": ["profiles:read"], "lifetime_days": "7",
            "requests_per_minute": ""})
        assert response.status_code == 302
        listing = admin_client.get("/admin/access/apitoken/")
    assert "made while the replica waits" in listing.content.decode()
    assert not seen["replica"]

    _replay("resume", replica)
    _replayed()
    with _reads() as seen:
        assert writer.get(f"/api/v1/profiles/{key}").status_code == 200
    assert _profile_reads(seen, "replica") and not _profile_reads(seen, "primary")  # caught up: the replica again


def test_a_lagging_or_stopped_replica_is_skipped_and_the_dashboard_says_so(replica, shop, make_api_client,
                                                                           admin_client, settings):
    from profiles.models import Profile

    reader = make_api_client("profiles:read")
    key = shop.first().customer.key
    reader.get(f"/api/v1/profiles/{key}")
    _replayed()
    settings.DATABASE_REPLICA_MAX_LAG_S = 0.5
    _replay("pause", replica)
    Profile.objects.filter(customer__key=key).update(events_included=12345)  # a commit the replica does not replay
    time.sleep(1.0)

    with _reads() as seen:
        body = reader.get(f"/api/v1/profiles/{key}").json()
    assert body["events_included"] == 12345  # the primary's answer
    assert _profile_reads(seen, "primary") and not _profile_reads(seen, "replica")
    tile = admin_client.get("/admin/").content.decode()
    assert 'id="tile-replicas"' in tile and "skipped: reads go to the primary" in tile and "replay paused" in tile

    _replay("resume", replica)
    _replayed()
    replica_states_forget()
    with _reads() as seen:
        assert reader.get(f"/api/v1/profiles/{key}").json()["events_included"] == 12345
    assert _profile_reads(seen, "replica")

    # stopped: reads go to the primary at once, the dashboard shows it unreachable, and it is used again after
    connections[ALIAS].close()
    embedded_replica_stop(replica["directory"], remove=False)
    replica_states_forget()
    started = time.monotonic()
    with CaptureQueriesContext(connections["default"]) as on_primary:
        assert reader.get(f"/api/v1/profiles/{key}").status_code == 200
    assert time.monotonic() - started < 5
    assert any("profiles_profile" in q["sql"] for q in on_primary.captured_queries)
    assert "unreachable" in admin_client.get("/admin/").content.decode()
    embedded_replica_run(replica["directory"], port=replica["port"])
    _replayed()
    replica_states_forget()
    with _reads() as seen:
        assert reader.get(f"/api/v1/profiles/{key}").status_code == 200
    assert _profile_reads(seen, "replica")


def _erase(external_id: str, officer) -> None:
    from privacy.services import privacy_request_execute, privacy_request_file, privacy_request_verify

    request = privacy_request_file(kind="erasure", source="synthetic", external_id=external_id, actor=officer)
    privacy_request_verify(request=request, actor=officer)
    assert privacy_request_execute(request=request, actor=officer).state == "completed"


def _external_id_of(key: str) -> str:
    from ingestion.import_jobs import SYNTHETIC_SOURCE
    from ingestion.pseudonyms import customer_key

    return next(f"C{n:07d}" for n in range(1, 1000) if customer_key(source=SYNTHETIC_SOURCE, external_id=f"C{n:07d}") == key)


def test_an_erased_subject_never_reappears_through_the_replica(replica, shop, make_api_client, make_staff):
    officer = make_staff("dpo")
    reader = make_api_client("profiles:read", "similarity:read")
    subject, other = shop[0], shop[1]
    external_id = _external_id_of(subject.customer.key)
    for profile in (subject, other):
        assert reader.get(f"/api/v1/profiles/{profile.customer.key}").status_code == 200
    _replayed()
    with _reads() as seen:
        assert reader.get(f"/api/v1/profiles/{subject.customer.key}").status_code == 200
    assert _profile_reads(seen, "replica")

    _replay("pause", replica)
    before = primary_wal_lsn()
    _erase(external_id, officer)
    # its commit position is recorded, and no erasure is left in flight
    assert int(broker_redis().get(mark_key(ERASURE_LSN_KEY))) > before
    assert broker_redis().zcard(mark_key(ERASURES_IN_FLIGHT_KEY)) == 0

    # the replica still holds the subject (it has not replayed the erasure) and lags well within the limit …
    with psycopg.connect(host="127.0.0.1", port=replica["port"], user="postgres",
                         dbname=connections["default"].settings_dict["NAME"]) as conn:
        assert conn.execute("SELECT count(*) FROM ingestion_customer WHERE key = %s",
                            [subject.customer.key]).fetchone()[0] == 1
    # … yet the API answers from the primary: the subject is gone, and so are the neighbour lists that
    # would name it
    for path in (f"/api/v1/profiles/{subject.customer.key}", f"/api/v1/profiles/{subject.customer.key}/similar"):
        with _reads() as seen:
            assert reader.get(path).status_code == 404
        assert not seen["replica"]
    with _reads() as seen:
        neighbours = reader.get(f"/api/v1/profiles/{other.customer.key}/similar?k=29").json()
    assert subject.customer.key not in {n["key"] for n in neighbours} and not seen["replica"]

    _replay("resume", replica)
    _replayed()
    for path in (f"/api/v1/profiles/{subject.customer.key}", f"/api/v1/profiles/{subject.customer.key}/similar"):
        with _reads() as seen:
            assert reader.get(path).status_code == 404
        assert seen["replica"]  # answered by the replica now that it has replayed the erasure
    with _reads() as seen:
        assert reader.get(f"/api/v1/profiles/{other.customer.key}").status_code == 200
    assert _profile_reads(seen, "replica")
