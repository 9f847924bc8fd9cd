"""Profiles of the real data sets: CDNOW's RFM traits and MovieLens ratings equal a hand
computation from the raw files."""

import pandas as pd
import pytest
from django.db import connection

from ingestion.pseudonyms import customer_key
from ingestion.import_jobs import import_job_create, import_job_run
from profiles import builds
from profiles.models import BuildStatus, Profile


@pytest.mark.django_db(transaction=True)
def test_cdnow_rfm_traits_equal_a_hand_computation_from_the_raw_file(datasets, settings):
    settings.PROFILE_BUILD_REINDEX_MIN_CUSTOMERS = 0  # also exercise the drop-and-rebuild of vector indexes
    path = datasets / "cdnow" / "CDNOW_master.txt"
    job = import_job_run(job_id=import_job_create(path=path, fmt="cdnow").pk)

    build = builds.profiles_build()

    assert build.status == BuildStatus.SUCCEEDED and build.profiles_written == 23_570
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'profiles_profile'")
        indexes = {row[0] for row in cursor.fetchall()}
    assert {"profile_feature_vector_hnsw", "profile_fused_hnsw", "profile_embedding_hnsw"} <= indexes

    raw = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str, "date": str})
    raw["day"] = pd.to_datetime(raw["date"], format="%Y%m%d", utc=True)
    as_of = raw["day"].max()
    sample = raw["customer_id"].drop_duplicates().sample(60, random_state=3)
    for external_id in sample:
        mine = raw[raw["customer_id"] == external_id]
        key = customer_key(source=job.source, external_id=external_id)
        traits = Profile.objects.get(customer__key=key).traits
        assert traits["frequency"] == mine["day"].nunique(), external_id
        assert traits["purchase_events"] == len(mine)
        assert traits["monetary"] == pytest.approx(mine["dollar_value"].sum(), abs=0.01)
        assert traits["units"] == mine["number_of_cds"].sum()
        assert traits["recency_days"] == pytest.approx((as_of - mine["day"].max()) / pd.Timedelta(days=1), abs=1e-3)
        assert traits["average_order_value"] == pytest.approx(
            mine["dollar_value"].sum() / mine["day"].nunique(), abs=0.01
        )


@pytest.mark.django_db(transaction=True)
def test_movielens_profiles_build_with_ratings_and_genres(datasets):
    job = import_job_run(job_id=import_job_create(path=datasets / "ml-100k", fmt="movielens").pk)

    build = builds.profiles_build()

    assert build.status == BuildStatus.SUCCEEDED and build.profiles_written == 943
    raw = pd.read_csv(datasets / "ml-100k" / "ml-100k.inter", sep="\t", header=0, names=["user", "item", "rating", "ts"])
    for user in (1, 42, 500, 943):
        traits = Profile.objects.get(customer__key=customer_key(source=job.source, external_id=str(user))).traits
        mine = raw[raw["user"] == user]
        assert traits["ratings"] == len(mine)
        assert traits["rating_mean"] == pytest.approx(mine["rating"].mean(), abs=1e-3)
        assert traits["top_categories"], "genres become category preferences"
        assert traits["age_band"] and traits["gender"]
