"""Training on the event store: a run trains, its version passes the gate and profiles carry its
embeddings; a worse version is refused; the Celery task trains end to end with a real worker."""

import time

import numpy as np
import pytest
from django.core.management import call_command

from ingestion.models import Customer, Event
from profiles import selectors
from profiles.models import Profile
from training import services
from training.models import ModelVersion, RunStatus, TrainingRun
from training.tasks import training_run_queue, training_run_task
from pipeline import flows

pytestmark = pytest.mark.django_db(transaction=True)
TINY = {"model": {"dim": 64, "layers": 1, "max_len": 20}, "train": {"epochs": 2, "batch_size": 128}}


@pytest.fixture
def profiled_shop(settings, tmp_path, make_shop):
    settings.MODELS_DIR = tmp_path / "models"
    make_shop(customers=300, events=20_000, seed=5)


def test_a_run_trains_activates_and_profiles_carry_its_embeddings(profiled_shop, capsys):
    call_command("train", "--arch", "gru", "--epochs", "2")

    run = TrainingRun.objects.get()
    version = ModelVersion.objects.get()
    assert run.status == RunStatus.SUCCEEDED and run.device == "cpu" and len(run.history) == 2
    # customers who opted out of profiling are left out of training (and get no embedding)
    with_events = Profile.objects.filter(events_included__gt=0, customer__consent_profiling=True).count()
    consenting_events = Event.objects.filter(customer__consent_profiling=True).count()
    assert run.dataset["customers"] == with_events and run.dataset["events"] == consenting_events < 20_000
    assert run.dataset["opted_out_excluded"] == Customer.objects.filter(consent_profiling=False).count() > 0
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

    flows.training_run(run_id=run.pk)

    candidate = ModelVersion.objects.get(run=run)
    assert not candidate.is_active and candidate.gate["passed"] is False
    assert candidate.gate["active_version"] == incumbent.pk
    assert ModelVersion.objects.get(is_active=True) == incumbent
    assert not Profile.objects.exclude(embedding=None).exists()


def test_a_finished_run_is_not_trained_again(profiled_shop):
    run = services.training_run_create(arch="gru", config=TINY)
    flows.training_run(run_id=run.pk)

    assert flows.training_run(run_id=run.pk) == (None, False)
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
    assert Profile.objects.exclude(embedding=None).count() == Profile.objects.filter(
        events_included__gt=0, customer__consent_profiling=True).count()


def test_items_get_embeddings_of_the_version_and_unseen_items_one_from_their_text(profiled_shop):
    from ingestion.models import Item
    from training.models import ItemEmbedding

    tea = Item.objects.create(sku="NEW-TEA", title="Jasmine green tea", category_path="Food/Tea", brand="Leaf")
    run = services.training_run_create(arch="gru", config={**TINY, "model": {**TINY["model"], "content": True}})

    flows.training_run(run_id=run.pk)

    version = ModelVersion.objects.get(run=run)
    assert version.is_active and run.__class__.objects.get(pk=run.pk).config["model"]["content_dim"] == 384
    rows = ItemEmbedding.objects.filter(model_version=version)
    assert rows.filter(from_content_only=False).count() == len(version.item_ids)
    assert set(rows.filter(from_content_only=True).values_list("item", flat=True)) == {tea.pk}
    assert len(rows.get(item=tea).embedding) == 64


def test_a_refresh_re_encodes_the_embedding_with_the_active_model(profiled_shop):
    """New events move the learned embedding, not only the traits; a customer first seen after
    training is encoded on its first refresh."""
    from ingestion.pseudonyms import customer_key
    from ingestion.models import Customer, Item
    from ingestion.services import events_ingest_batch
    from pipeline.flows import customers_refresh

    run = services.training_run_create(arch="gru", config=TINY)
    flows.training_run(run_id=run.pk)
    version = ModelVersion.objects.get(is_active=True)
    skus = list(Item.objects.order_by("sku").values_list("sku", flat=True)[:6])

    def post(items, day):
        events_ingest_batch(source="default", rows=[
            {"customer_id": "late-comer", "event_type": "view", "item_id": sku, "timestamp": f"2025-12-{day:02d}T10:{i:02d}:00Z"}
            for i, sku in enumerate(items)
        ])

    post(skus[:3], 1)
    customer = Customer.objects.get(key=customer_key(source="default", external_id="late-comer"))
    customers_refresh(customer_ids=[customer.pk])
    first = Profile.objects.get(customer=customer)
    assert first.model_version_id == version.pk and first.embedding is not None
    post(skus[3:], 2)
    customers_refresh(customer_ids=[customer.pk])

    second = Profile.objects.get(customer=customer)
    assert second.events_included == 6 and second.model_version_id == version.pk
    assert not np.allclose(first.embedding, second.embedding)
    # the fused vector is made from the new embedding, with the feature set's weight
    from profiles.fusion import fuse

    weight = second.feature_set.fusion_weight
    expected = fuse(np.asarray([second.feature_vector]), np.asarray([second.embedding]), weight, 64)[0]
    assert np.allclose(second.fused, expected, atol=1e-5)


def test_retraining_is_scheduled_weekly_and_never_runs_twice_at_once(profiled_shop, settings):
    from config.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["weekly-retraining"]
    assert entry["task"] in app.tasks
    assert entry["schedule"].day_of_week == {settings.TRAINING_RETRAIN_WEEKDAY}

    first = training_run_queue()
    assert first is not None and first.status == RunStatus.PENDING and first.arch == settings.TRAINING_DEFAULT_ARCH
    assert training_run_queue() is None
    assert TrainingRun.objects.count() == 1


def test_a_run_refuses_an_embedding_width_the_profile_cannot_hold(profiled_shop):
    with pytest.raises(ValueError, match="dim must be 64"):
        services.training_run_create(arch="gru", config={"model": {"dim": 32}})
    assert not TrainingRun.objects.exists()


def test_embeddings_separate_the_generators_latent_segments(profiled_shop):
    """Separation measures: embeddings are centred (their common direction removed: learned
    embeddings are anisotropic, every pair has a cosine near 0.9) and re-normalised; then the mean
    cosine within a ground-truth segment minus the mean across segments (0 = no separation), and
    how often a customer's 10 nearest neighbours vote for its own segment against always guessing
    the largest segment. The silhouette is printed too: segments overlap by design (a churner was
    a regular customer before churning), so it stays near 0."""
    from sklearn.metrics import silhouette_score

    run = services.training_run_create(arch="transformer", config={
        "model": {"layers": 1, "max_len": 50, "content": False}, "train": {"epochs": 8, "patience": 8}})
    flows.training_run(run_id=run.pk)
    rows = list(Profile.objects.exclude(embedding=None).values_list("embedding", "customer__ground_truth__segment"))
    vectors = np.vstack([np.asarray(v) for v, _ in rows])
    vectors = vectors - vectors.mean(axis=0)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    segments = np.array([s for _, s in rows])
    similarity = vectors @ vectors.T
    same = segments[:, None] == segments[None, :]
    off_diagonal = ~np.eye(len(rows), dtype=bool)
    within, across = similarity[same & off_diagonal].mean(), similarity[~same].mean()
    silhouette = silhouette_score(vectors, segments, metric="cosine")
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :10]
    voted = [max(set(segments[n]), key=list(segments[n]).count) for n in nearest]
    knn_accuracy = float(np.mean(np.array(voted) == segments))
    _, counts = np.unique(segments, return_counts=True)
    majority = counts.max() / counts.sum()
    print(f"segment separation: within {within:.3f}, across {across:.3f}, silhouette {silhouette:.3f}, "
          f"10-NN segment accuracy {knn_accuracy:.3f} (majority class {majority:.3f})")

    assert within - across > 0.03
    assert knn_accuracy > majority + 0.1


def test_an_operator_retrains_from_the_admin_once_not_twice(profiled_shop, client, django_user_model):
    admin = django_user_model.objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client.force_login(admin)

    page = client.get("/admin/training/trainingrun/")
    assert b'id="start-training-run"' in page.content
    first = client.post("/admin/training/trainingrun/start/", follow=True)
    second = client.post("/admin/training/trainingrun/start/", follow=True)

    run = TrainingRun.objects.get()
    assert run.status == RunStatus.PENDING and run.created_by == admin
    assert f"#{run.pk}".encode() in first.content
    assert b"already pending or running" in second.content
    assert client.get("/admin/training/trainingrun/start/").status_code == 405


def test_make_runs_demo_step_queues_one_run_for_the_worker(profiled_shop, capsys):
    call_command("train", "--if-missing", "--queue", "--epochs", "5")
    call_command("train", "--if-missing", "--queue", "--epochs", "5")

    run = TrainingRun.objects.get()
    assert run.status == RunStatus.PENDING and run.config["train"]["epochs"] == 5
    out = capsys.readouterr().out
    assert f"training run #{run.pk}" in out and "nothing to do" in out
