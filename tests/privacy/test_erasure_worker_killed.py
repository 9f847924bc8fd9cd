"""SIGKILL mid-erasure, twice: the process executing an erasure (the admin's or the API's) is killed
while its transaction is open, then the Celery worker whose beat sweep took the stale request over
is killed the same way. Redis hands the unacknowledged sweep to a new worker, which completes the
erasure once: one receipt, one ledger row, one "completed" in the audit, nothing left of the subject,
and later sweeps leave it alone. The killed processes' transactions roll back (their backends notice
the dead client within DATABASE_CLIENT_CHECK_MS, even while waiting on a lock)."""

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from config.celery import app as celery_app
from ingestion.models import Customer
from ingestion.pseudonyms import customer_key
from ingestion.services import customers_upsert, events_ingest_batch
from privacy import services
from privacy.models import AuditEntry, ErasureLedger, PrivacyRequest, RequestState
from profiles.builds import profiles_build
from tests.conftest import celery_worker_running, process_env, wait_until
from tests.privacy.residue import residue_found

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

SUBJECT, EMAIL = "subject-kill-9", "killed.mid.erasure@example.com"
VAR = Path(settings.BASE_DIR) / "var"
STALE_S = 2


def _erasures_waiting_on_a_lock(url: str) -> int:
    """Backends of other processes blocked on a lock inside an open transaction (the erasure)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND wait_event_type = 'Lock' AND state = 'active'").fetchone()[0]


def test_an_erasure_killed_twice_mid_transaction_completes_once(compliance_user, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    customers_upsert(rows=[{"external_id": SUBJECT, "email": EMAIL, "name": "Kill Nine"}], source="default")
    events_ingest_batch(rows=[{"customer_id": c, "event_type": "purchase", "item_id": f"sku-{i}", "value": "9.50",
                               "timestamp": f"2025-04-0{1 + i}T10:00:00Z"} for c in [SUBJECT, "other-1", "other-2"]
                              for i in range(4)])
    profiles_build()
    subject = Customer.objects.get(key=customer_key(source="default", external_id=SUBJECT))
    request = services.privacy_request_file(kind="erasure", source="default", external_id=SUBJECT, actor=compliance_user)
    services.privacy_request_verify(request=request, actor=compliance_user)
    url = connection.get_connection_params()
    url = psycopg.conninfo.make_conninfo(**{k: v for k, v in url.items() if k in ("dbname", "host", "port", "user", "password")})
    env = process_env(PRIVACY_RETRY_SECONDS="1", PRIVACY_EXECUTION_STALE_SECONDS=str(STALE_S),
                      TASK_VISIBILITY_TIMEOUT_S="3", DATABASE_CLIENT_CHECK_MS="500")
    celery_app.control.purge()

    # another session holds the subject's customer row: every erasure attempt blocks on it, mid-transaction
    blocker = psycopg.connect(url)
    blocker.execute("SELECT id FROM ingestion_customer WHERE id = %s FOR UPDATE", [subject.pk])

    # 1. the process executing the request (as the admin or the API would) is killed
    executor = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c",
         "from privacy import services; from privacy.models import PrivacyRequest; "
         f"services.privacy_request_execute(request=PrivacyRequest.objects.get(pk={request.pk}))"],
        cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _erasures_waiting_on_a_lock(url) == 1, 60, "the first execution blocked mid-erasure")
    executor.kill()
    executor.wait(timeout=10)
    wait_until(lambda: _erasures_waiting_on_a_lock(url) == 0, 30, "the killed client's backend gone")
    assert PrivacyRequest.objects.get(pk=request.pk).state == RequestState.EXECUTING  # left behind
    assert Customer.objects.filter(pk=subject.pk).exists()  # its transaction rolled back

    # 2. the privacy sweep (what beat sends) takes the stale request over on a worker; that worker is
    # killed mid-erasure too. No beat in this worker: SIGKILL would leave its beat process behind.
    first_log = VAR / "test-erasure-killed-worker-1.log"
    with celery_worker_running(env, queues="default", log=first_log) as first:
        time.sleep(STALE_S)
        celery_app.send_task("privacy.tasks.privacy_requests_retry_task", queue="default")
        wait_until(lambda: PrivacyRequest.objects.get(pk=request.pk).attempts == 2 and _erasures_waiting_on_a_lock(url) == 1,
              60, "the sweep's execution blocked mid-erasure", first_log)
        first.kill()
        first.wait(timeout=10)
    wait_until(lambda: _erasures_waiting_on_a_lock(url) == 0, 30, "the killed worker's backend gone")
    assert Customer.objects.filter(pk=subject.pk).exists()
    blocker.rollback()
    blocker.close()

    # 3. a new worker gets the unacknowledged sweep again (and beat's next ones) and completes the erasure
    second_log = VAR / "test-erasure-killed-worker-2.log"
    with celery_worker_running(env, queues="default", log=second_log, beat=True):
        done = wait_until(lambda: (r := PrivacyRequest.objects.get(pk=request.pk)).state == RequestState.COMPLETED and r,
                     90, "the erasure completed", second_log)
        time.sleep(STALE_S + 3)  # later sweeps (and any late copy) run meanwhile
        assert PrivacyRequest.objects.get(pk=request.pk).attempts == done.attempts == 3

    text = second_log.read_text()
    assert "privacy_requests_retry_task" in text
    assert done.receipt["stores"]["customers"]["removed"] == 1  # the earlier attempts removed nothing
    assert ErasureLedger.objects.filter(request=request).count() == 1
    actions = list(AuditEntry.objects.filter(target_id=str(request.pk)).order_by("id").values_list("action", flat=True))
    assert actions.count("privacy_request.executing") == 3 and actions.count("privacy_request.completed") == 1
    assert actions[-1] == "privacy_request.completed"
    assert not Customer.objects.filter(pk=subject.pk).exists()
    assert residue_found([SUBJECT, EMAIL, subject.key], settings) == []
    celery_app.control.purge()
