"""Poison messages with a real worker (prefork, one process): a task that kills its worker every
time and one that fails and retries for ever both stop after TASK_MAX_DELIVERIES deliveries, land in
a dead letter with their error, and never block the queue: a good task queued after them completes.
A task that fails at once is dead-lettered after its one delivery. The admin lists them."""

import time
from pathlib import Path

import pytest
from django.conf import settings

from config.celery import app as celery_app
from pipeline.models import DeadLetter
from tests.config.poison_tasks import broken_task, good_task, poison_kill_task, poison_retry_task
from tests.conftest import celery_worker_running, process_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

MAX_DELIVERIES = 3


def test_poison_tasks_are_dead_lettered_after_n_deliveries_and_the_queue_keeps_moving(client, make_staff):
    celery_app.control.purge()
    env = process_env(TASK_MAX_DELIVERIES=str(MAX_DELIVERIES))
    log = Path(settings.BASE_DIR) / "var" / "test-poison-worker.log"
    with celery_worker_running(env, queues="default", log=log, pool="prefork", include="tests.config.poison_tasks"):
        kill = poison_kill_task.delay("kills its worker")
        retry = poison_retry_task.delay("retries")
        broken = broken_task.delay("order 17")
        good = good_task.delay(21)

        assert good.get(timeout=120) == 42
        deadline = time.monotonic() + 120
        while DeadLetter.objects.count() < 3:
            assert time.monotonic() < deadline, f"dead letters: {list(DeadLetter.objects.values())}\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        assert good_task.delay(1).get(timeout=60) == 2  # and the queue still moves afterwards

    letters = {letter.task_id: letter for letter in DeadLetter.objects.all()}
    assert set(letters) == {kill.id, retry.id, broken.id}
    assert letters[kill.id].task_name == "tests.config.poison_tasks.poison_kill_task"
    assert letters[kill.id].deliveries == MAX_DELIVERIES
    assert letters[kill.id].args == ["kills its worker"]
    assert "worker was lost" in letters[kill.id].error
    assert letters[retry.id].deliveries == MAX_DELIVERIES
    assert letters[retry.id].error == "RuntimeError: poison: fails every time (retries)"
    assert letters[broken.id].deliveries == 1
    assert letters[broken.id].error == "ValueError: broken input: order 17"
    assert log.read_text().count("poison: fails every time") >= MAX_DELIVERIES

    client.force_login(make_staff("ops"))
    page = client.get("/admin/pipeline/deadletter/")
    assert page.status_code == 200
    for text in (b"poison_kill_task", b"poison_retry_task", b"ValueError: broken input: order 17", b"worker was lost"):
        assert text in page.content
