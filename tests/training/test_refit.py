"""The version a run activates is refitted on every event (validation and test items included) for
the epochs early stopping chose; its metrics stay those of the held-out run."""

from pathlib import Path

import pytest
from django.db.models import Count

from ingestion.models import Event
from pipeline import flows
from profiles.models import Profile
from training import services
from training.models import ModelVersion
from training.ml.trainer import model_load

pytestmark = pytest.mark.django_db(transaction=True)
TINY = {"model": {"dim": 64, "layers": 1, "max_len": 20}, "train": {"epochs": 2, "batch_size": 128}}


@pytest.fixture
def profiled_shop(settings, tmp_path, make_shop):
    settings.MODELS_DIR = tmp_path / "models"
    make_shop(customers=300, events=20_000, seed=5)


def _trainable_events() -> tuple[int, int]:
    """(events, customers) of the live, consenting customers with at least two events (a window
    needs an input and a target)."""
    counts = list(Event.objects.filter(customer__consent_profiling=True, customer__merged_into=None)
                  .values("customer").annotate(n=Count("pk")).filter(n__gte=2).values_list("n", flat=True))
    return sum(counts), len(counts)


def test_the_activated_version_is_refitted_on_every_event(profiled_shop):
    run = services.training_run_create(arch="gru", config=TINY)

    flows.training_run(run_id=run.pk)

    version = ModelVersion.objects.get(run=run)
    assert version.is_active
    events, customers = _trainable_events()
    refit = version.metrics["refit"]
    assert refit["epochs"] == version.metrics["best_epoch"] + 1 and refit["seconds"] > 0
    # the refit's windows read every event, each customer's newest included
    assert refit["tokens"] == events
    artifact, selection = Path(version.artifact_path), Path(version.metrics["selection_artifact"])
    assert artifact.name == "refit.pt" and selection.name == "best.pt" and artifact.parent == selection.parent
    served, held_out = model_load(artifact), model_load(selection)
    assert any((a != b).any() for a, b in zip(served.state_dict().values(), held_out.state_dict().values(), strict=True))
    # the figures are the held-out run's (its test items were never trained on there)
    assert version.metrics["test"]["ndcg@10"] == run.__class__.objects.get(pk=run.pk).metrics["ndcg@10"]
    # the profiles carry the refitted model's embeddings
    assert set(Profile.objects.exclude(embedding=None).values_list("model_version", flat=True)) == {version.pk}
    assert customers > 0


def test_without_refit_the_held_out_model_is_activated(profiled_shop, settings):
    settings.TRAINING_REFIT = False
    run = services.training_run_create(arch="gru", config=TINY)

    flows.training_run(run_id=run.pk)

    version = ModelVersion.objects.get(run=run)
    assert version.is_active and "refit" not in version.metrics
    assert version.artifact_path == version.metrics["selection_artifact"]
