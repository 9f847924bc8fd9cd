"""The activation gate scores the active version and the candidate on the same data: the
candidate run's validation split (same customers, same targets, same protocol), each with its
held-out model, in the same call. A version's stored figure was measured on whatever data its own
run saw, so comparing stored figures can refuse a better model or pass a worse one."""

import pytest
from django.contrib import admin

from pipeline import flows
from training import services
from training.models import ModelVersion

pytestmark = pytest.mark.django_db(transaction=True)
TINY = {"model": {"dim": 64, "layers": 1, "max_len": 20}, "train": {"epochs": 2, "batch_size": 128}}
# one epoch at a learning rate that leaves the weights where they started: a model that ranks at random
UNTRAINED = {"model": TINY["model"], "train": {"epochs": 1, "batch_size": 128, "lr": 1e-9}}


@pytest.fixture
def profiled_shop(settings, tmp_path, make_shop):
    settings.MODELS_DIR = tmp_path / "models"
    make_shop(customers=300, events=20_000, seed=5)


def _trained(config) -> ModelVersion:
    run = services.training_run_create(arch="gru", config=config)
    flows.training_run(run_id=run.pk)
    return ModelVersion.objects.get(run=run)


def test_a_candidate_better_on_the_same_data_passes_though_its_stored_figure_is_lower(profiled_shop):
    incumbent = _trained(UNTRAINED)
    assert incumbent.is_active
    # its stored figure was measured on other data (an easier, older snapshot, say): far above anything here
    ModelVersion.objects.filter(pk=incumbent.pk).update(metrics={**incumbent.metrics, "valid": {"ndcg@10": 0.99}})

    candidate = _trained(TINY)

    gate = candidate.gate
    assert gate["basis"] == "same data" and gate["active_version"] == incumbent.pk
    assert gate["stored"] == {"candidate": candidate.metrics["valid"]["ndcg@10"], "active": 0.99}
    assert gate["stored"]["candidate"] < gate["stored"]["active"]  # the stored figures would have refused it
    # scored here on the candidate's own validation split: its figure is the one its run measured
    assert gate["candidate"] == pytest.approx(candidate.metrics["valid"]["ndcg@10"], abs=1e-9)
    assert gate["active"] < gate["candidate"] and gate["passed"] is True
    assert gate["customers"] > 0 and gate["exclude_seen"] is True
    assert ModelVersion.objects.get(is_active=True) == candidate
    # the admin says on what the figures were measured
    summary = admin.site._registry[ModelVersion].gate_summary(candidate)
    assert f"validation data ({gate['customers']} customers)" in summary and "passed" in summary


def test_a_candidate_worse_on_the_same_data_is_refused_though_its_stored_figure_is_higher(profiled_shop):
    incumbent = _trained(TINY)
    assert incumbent.is_active
    ModelVersion.objects.filter(pk=incumbent.pk).update(metrics={**incumbent.metrics, "valid": {"ndcg@10": 0.0}})

    candidate = _trained(UNTRAINED)

    gate = candidate.gate
    assert gate["basis"] == "same data"
    assert gate["stored"]["candidate"] >= gate["stored"]["active"] == 0.0  # the stored figures would have passed it
    assert gate["candidate"] < gate["active"] and gate["passed"] is False
    assert not candidate.is_active and ModelVersion.objects.get(is_active=True) == incumbent


def test_without_a_readable_active_model_the_stored_figures_decide_and_the_record_says_so(profiled_shop):
    incumbent = ModelVersion.objects.create(name="no artifact", is_active=True, metrics={"valid": {"ndcg@10": 0.99}})

    candidate = _trained(TINY)

    assert candidate.gate["basis"] == "stored" and candidate.gate["active"] == 0.99
    assert candidate.gate["passed"] is False and "customers" not in candidate.gate
    assert ModelVersion.objects.get(is_active=True) == incumbent
    assert "stored figures" in admin.site._registry[ModelVersion].gate_summary(candidate)
