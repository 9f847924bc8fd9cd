"""Tasks land on their own queue only, and enqueueing without a broker fails with one clear line."""

import pytest
import redis
from django.db import transaction

from config.celery import BrokerUnavailable, app, broker_check
from ingestion.import_jobs import import_job_create
from ingestion.tasks import import_job_queue

pytestmark = pytest.mark.django_db(transaction=True)


def test_import_task_is_published_to_the_ingest_queue_only(tmp_path):
    app.control.purge()
    path = tmp_path / "e.csv"
    path.write_text("customer_id,event_type,timestamp\nc1,search,2025-01-01T00:00:00Z\n")
    with transaction.atomic():
        job = import_job_create(path=path, fmt="csv")
        import_job_queue(job=job)

    broker = redis.Redis.from_url(app.conf.broker_url)
    assert {q: broker.llen(q) for q in ("default", "ingest", "training")} == {"default": 0, "ingest": 1, "training": 0}
    app.control.purge()


def test_broker_check_names_the_command_that_starts_redis(monkeypatch):
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")

    with pytest.raises(BrokerUnavailable, match="redis-server --daemonize yes"):
        broker_check(timeout=0.5)
