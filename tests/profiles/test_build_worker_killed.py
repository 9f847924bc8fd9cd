"""A Celery worker killed with SIGKILL in the middle of a batch build (a chord of chunk tasks): the
chunk it was running goes back to the queue after the visibility timeout, a new worker finishes the
chunks, the chord's callback closes the build once, and every customer has one whole profile, each
chunk counted once."""

import time
from pathlib import Path

import pytest
from django.conf import settings

from config.celery import app as celery_app
from ingestion.import_jobs import synthetic_shop_load
from ingestion.models import Customer
from profiles.models import BuildStatus, Profile, ProfileBuild
from profiles.tasks import profile_build_queue
from tests.conftest import celery_worker_running, process_env, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

QUEUES = "default,ingest,profiles,segments,training"


def test_a_build_whose_worker_is_killed_mid_chord_finishes_once_on_another_worker():
    synthetic_shop_load(customers=1500, events=30_000, seed=7)
    celery_app.control.purge()
    env = process_env(TASK_VISIBILITY_TIMEOUT_S="4")
    var = Path(settings.BASE_DIR) / "var"
    first_log, second_log = var / "test-build-killed-worker-1.log", var / "test-build-killed-worker-2.log"

    with celery_worker_running(env, queues=QUEUES, log=first_log) as first:
        build = profile_build_queue(chunk_customers=75)  # fitted here; 20 chunk tasks go to the worker
        assert build.chunks_total >= 10
        wait_until(lambda: 2 <= ProfileBuild.objects.get(pk=build.pk).chunks_done < build.chunks_total - 2,
              120, "build under way", first_log)
        first.kill()  # SIGKILL, mid-chunk or between chunks
        first.wait(timeout=10)
    interrupted = ProfileBuild.objects.get(pk=build.pk)
    assert interrupted.status == BuildStatus.RUNNING and interrupted.chunks_done < build.chunks_total

    with celery_worker_running(env, queues=QUEUES, log=second_log):
        finished = wait_until(lambda: (b := ProfileBuild.objects.get(pk=build.pk)).status != BuildStatus.RUNNING and b,
                         240, "the build finished on the new worker", second_log)
        time.sleep(2)

    profiled = Customer.objects.filter(merged_into=None, consent_profiling=True).count()
    assert finished.status == BuildStatus.SUCCEEDED, finished.error
    assert finished.chunks_done == finished.chunks_total == build.chunks_total
    assert sorted(finished.done_chunks) == list(range(build.chunks_total))
    assert finished.profiles_written == profiled == Profile.objects.count()
    assert not Profile.objects.filter(feature_vector=None).exists()  # no half-written profile
    assert not Profile.objects.exclude(feature_set=finished.feature_set).exists()
    assert second_log.read_text().count("profile_build_finish_task[") == 2  # received and succeeded, once
