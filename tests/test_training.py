"""Training on the event store: a run trains, its version passes the gate and profiles carry its
embeddings; a worse version is refused; the Celery task trains end to end with a real worker."""

import time

import numpy as np
import pytest
from django.core.management import call_command

from ingestion.services import synthetic_shop_load
from profiles import selectors
from profiles.models import Profile
from profiles.services import profiles_build
from training import services
from training.models import ModelVersion, RunStatus, TrainingRun
from training.tasks import training_run_task

pytestmark = pytest.mark.django_db(transaction=True)
TINY = {"model": {"dim": 64, "layers": 1, "max_len": 20}, "train": {"epochs": 2, "batch_size": 128}}


@pytest.fixture
def profiled_shop(settings, tmp_path):
    settings.MODELS_DIR = tmp_path / "models"
    synthetic_shop_load(customers=300, events=20_000, seed=5)
    profiles_build()


def test_a_run_trains_activates_and_profiles_carry_its_embeddings(profiled_shop, capsys):
    call_command("train", "--arch", "gru", "--epochs", "2")

    run = TrainingRun.objects.get()
    version = ModelVersion.objects.get()
    assert run.status == RunStatus.SUCCEEDED and run.device == "cpu" and len(run.history) == 2
    with_events = Profile.objects.filter(events_included__gt=0).count()
    assert run.dataset["customers"] == with_events and run.dataset["events"] == 20_000
    assert version.is_active and version.gate["passed"] and len(version.artifact_sha256) == 64
    profiles = Profile.objects.exclude(embedding=None)
    assert profiles.count() == with_events and set(profiles.values_list("model_version", flat=True)) == {version.pk}
    vector = np.asarray(profiles.first().embedding)
    assert vector.shape == (64,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    neighbours = selectors.profiles_similar(profile=profiles.first(), k=5, space="embedding")
    assert len(neighbours) == 5
    assert "activated" in capsys.readouterr().out


def test_the_gate_refuses_a_version_worse_than_the_active_one(profiled_shop):
    incumbent = ModelVersion.objects.create(name="incumbent", is_active=True, metrics={"valid": {"ndcg@10": 0.99}})
    run = services.training_run_create(arch="cnn", config=TINY)

    services.training_run_execute(run_id=run.pk)

    candidate = ModelVersion.objects.get(run=run)
    assert not candidate.is_active and candidate.gate["passed"] is False
    assert candidate.gate["active_version"] == incumbent.pk
    assert ModelVersion.objects.get(is_active=True) == incumbent
    assert not Profile.objects.exclude(embedding=None).exists()


def test_a_finished_run_is_not_trained_again(profiled_shop):
    run = services.training_run_create(arch="gru", config=TINY)
    services.training_run_execute(run_id=run.pk)

    assert services.training_run_execute(run_id=run.pk) is None
    assert ModelVersion.objects.filter(run=run).count() == 1


@pytest.mark.worker
def test_the_celery_training_task_trains_end_to_end(profiled_shop, celery_worker, settings):
    run = services.training_run_create(arch="transformer", config=TINY)

    training_run_task.delay(run.pk)

    deadline = time.monotonic() + 120
    while TrainingRun.objects.get(pk=run.pk).status in (RunStatus.PENDING, RunStatus.RUNNING):
        assert time.monotonic() < deadline, "training task did not finish"
        time.sleep(0.5)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert ModelVersion.objects.get(run=run).is_active
    assert Profile.objects.exclude(embedding=None).count() == Profile.objects.filter(events_included__gt=0).count()
