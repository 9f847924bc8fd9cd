"""Recommendations through the API on real data: MovieLens-100k with each user's last rating held
out of the store; the product imports the rest, builds profiles, trains its CNN encoder and serves
GET /profiles/{id}/recommendations?k=10. The held-out film should be among the ten at the rate the
training benchmark measures (README, "MovieLens-100k"; popularity 0.0838 with seen films excluded),
not merely at the rate of the most-rated films. Seen on 2026-12-01: HR@10 0.1941 through the API,
0.2100 in the run's own test; with the refit on every stored event, 0.2036 through the API."""

import shutil

import pandas as pd
import pytest

from ingestion.import_jobs import import_job_create, import_job_run
from profiles.builds import profiles_build
from training.models import ModelVersion
from pipeline.flows import training_run
from training.services import training_run_create

pytestmark = pytest.mark.django_db(transaction=True)
CNN = {"model": {"max_len": 50, "content": False, "future_window": 8, "aux_weight": 0.0},
       "train": {"epochs": 40, "patience": 10, "batch_size": 64}}


def _held_out_split(source, target) -> dict[str, str]:
    """Copy the data set without each user's last rating (ties in time keep file order, as the
    benchmark's leave-one-out does); return user → held-out item."""
    target.mkdir()
    ratings = pd.read_csv(source / "ml-100k.inter", sep="\t")
    ordered = ratings.sort_values(["user_id:token", "timestamp:float"], kind="mergesort")
    last = ordered.groupby("user_id:token").tail(1)
    ratings.drop(index=last.index).to_csv(target / "ml-100k.inter", sep="\t", index=False)
    for name in ("ml-100k.item", "ml-100k.user"):
        shutil.copy(source / name, target / name)
    return {str(u): str(i) for u, i in zip(last["user_id:token"], last["item_id:token"], strict=True)}


def test_held_out_films_are_recommended_at_the_benchmarked_rate(datasets, tmp_path, settings, make_api_client, capsys):
    settings.MODELS_DIR = tmp_path / "models"
    # Customers are created in pseudonym order, so the order training meets them in, and with it
    # the trained model, depends on the key; a fixed key makes the run the same in every checkout.
    settings.PSEUDONYM_KEYS = [("k1", "movielens-recommendation-test-key")]
    held_out = _held_out_split(datasets / "ml-100k", tmp_path / "ml-100k")
    import_job_run(job_id=import_job_create(path=tmp_path / "ml-100k", fmt="movielens", source="default").pk)
    profiles_build()
    run = training_run_create(arch="cnn", config=CNN)
    training_run(run_id=run.pk, rebuild=True)
    run.refresh_from_db()
    assert run.dataset["events"] == 100_000 - len(held_out) and run.dataset["customers"] == 943, run.dataset
    assert ModelVersion.objects.get(run=run).is_active
    reader = make_api_client("profiles:read")

    hits, methods = 0, set()
    for user, item in held_out.items():
        response = reader.get(f"/api/v1/profiles/{user}/recommendations?by=external_id&k=10")
        assert response.status_code == 200
        body = response.json()
        methods.add(body["method"])
        hits += f"ml-{item}" in {i["sku"] for i in body["items"]}
    hit_rate = hits / len(held_out)
    with capsys.disabled():
        print(f"\nMovieLens-100k via the API: HR@10 {hit_rate:.4f} ({hits}/{len(held_out)} users), "
              f"{len(run.history)} epochs, the run's own test HR@10 {run.metrics.get('hr@10')}")

    assert methods == {"embedding"}
    assert hit_rate >= 0.10
