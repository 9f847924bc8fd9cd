"""A Celery worker killed with SIGKILL in the middle of a training run: the task goes back to the
queue after the visibility timeout, a new worker resumes the run from its last checkpoint, and the
run ends with exactly one model version and one checkpoint directory."""

import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from config.celery import app as celery_app
from training import services
from training.models import ModelVersion, RunStatus, TrainingRun
from training.tasks import training_run_task
from tests.conftest import celery_worker_running, process_env, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

EPOCHS = 8
CONFIG = {"model": {"dim": 64, "layers": 1, "max_len": 20}, "train": {"epochs": EPOCHS, "batch_size": 128, "patience": EPOCHS}}
QUEUES = "default,ingest,profiles,segments,training"


def test_a_training_run_whose_worker_is_killed_resumes_on_another_worker_and_makes_one_version(
        settings, tmp_path, make_shop):
    settings.MODELS_DIR = tmp_path / "models"
    make_shop(customers=300, events=20_000, seed=5)
    celery_app.control.purge()
    env = process_env(TASK_VISIBILITY_TIMEOUT_S="4")
    var = Path(django_settings.BASE_DIR) / "var"
    first_log, second_log = var / "test-training-killed-worker-1.log", var / "test-training-killed-worker-2.log"
    run = services.training_run_create(arch="gru", config=CONFIG)

    with celery_worker_running(env, queues=QUEUES, log=first_log) as first:
        training_run_task.delay(run.pk)
        wait_until(lambda: 2 <= len(TrainingRun.objects.get(pk=run.pk).history) < EPOCHS - 2, 240, "training under way", first_log)
        first.kill()
        first.wait(timeout=10)
    epochs_before_kill = len(TrainingRun.objects.get(pk=run.pk).history)
    assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.RUNNING

    with celery_worker_running(env, queues=QUEUES, log=second_log):
        finished = wait_until(lambda: (r := TrainingRun.objects.get(pk=run.pk)).status in (RunStatus.SUCCEEDED, RunStatus.FAILED) and r,
                         300, "the run finished on the new worker", second_log)
        time.sleep(2)

    assert finished.status == RunStatus.SUCCEEDED, finished.error
    assert ModelVersion.objects.filter(run=finished).count() == 1
    assert ModelVersion.objects.get(run=finished).is_active
    assert [path.name for path in Path(settings.MODELS_DIR).iterdir()] == [f"run-{run.pk}-{run.created_at:%Y%m%dT%H%M%S%f}"]
    # resumed from the last checkpoint: each epoch once in the history, none lost or trained twice
    assert [record["epoch"] for record in finished.history] == list(range(EPOCHS))
    assert 2 <= epochs_before_kill < EPOCHS
