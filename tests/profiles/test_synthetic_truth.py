"""Profiles on data whose truth is known: the synthetic generator's latent segments, and the raw
CDNOW and MovieLens files recomputed by hand."""

import numpy as np
import pandas as pd
import pytest
from django.db import connection
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from ingestion.models import Customer
from pipeline.flows import customers_refresh
from profiles import feature_sets, preprocessing, services
from profiles.features import store_as_of
from profiles.models import BuildStatus, FeatureSet, Profile


@pytest.fixture(scope="module")
def synthetic_profiles(django_db_setup, django_db_blocker, make_shop):
    """A 3,000-customer shop (seed 11, 200k events) loaded and profiled once for this module."""
    with django_db_blocker.unblock():
        build = make_shop(customers=3000, events=200_000, seed=11, chunk_customers=1000).build
        rows = Profile.objects.values(
            "customer_id", "value_tier", "lifecycle_stage", "traits", "explanation",
            "customer__ground_truth__segment", "customer__ground_truth__churned_at",
            "customer__ground_truth__parameters",
        )
        frame = pd.DataFrame(list(rows))
        as_of = store_as_of()
        yield build, frame, as_of
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE profiles_profile, profiles_profilebuild, profiles_featureset, ingestion_event, "
                "ingestion_socialedge, ingestion_customergroundtruth, ingestion_customer, ingestion_customerkey, ingestion_item, "
                "ingestion_importjob, ingestion_quarantinedrow CASCADE"
            )


def test_batch_build_profiles_every_customer_in_chunks(synthetic_profiles, db):
    build, frame, _ = synthetic_profiles

    assert build.status == BuildStatus.SUCCEEDED
    assert (build.chunks_total, build.chunks_done) == (3, 3)
    assert Customer.objects.count() == 3000  # opted out of profiling (about 3%): never profiled
    assert build.profiles_written == len(frame) == Customer.objects.filter(consent_profiling=True).count()
    profile = Profile.objects.exclude(feature_vector=None).first()
    assert len(profile.feature_vector) == 16 and len(profile.fused) == 80
    assert profile.feature_set.is_active and profile.snapshot_at and profile.watermark


def test_lifecycle_stages_recover_the_generated_churners(synthetic_profiles, db):
    """Measure: of customers the generator churned more than 30 days before the end, the share
    labelled at-risk or lapsed (recall), and balanced accuracy over everyone. Measured on this
    shop: recall 0.99, balanced accuracy 0.81 (active customers of low activity who happen to be
    quiet for a month are at-risk too, by design). Thresholds leave room for other seeds."""
    _, frame, as_of = synthetic_profiles
    churned_at = pd.to_datetime(frame["customer__ground_truth__churned_at"], utc=True)
    gone = (churned_at < as_of - pd.Timedelta(days=30)).to_numpy()
    flagged = frame["lifecycle_stage"].isin(["at_risk", "lapsed"]).to_numpy()

    recall = (flagged & gone).sum() / gone.sum()
    assert gone.sum() > 300
    assert recall >= 0.95, recall
    assert balanced_accuracy_score(gone, flagged) >= 0.75


def test_value_tiers_recover_the_big_spenders(synthetic_profiles, db):
    """Measure: AUC of the ordinal tier for the latent loyal_big_spender segment, and the lift of
    that segment in the high tier over its share of the population (measured 0.872 and 4.55)."""
    _, frame, _ = synthetic_profiles
    big = (frame["customer__ground_truth__segment"] == "loyal_big_spender").to_numpy()
    tier = frame["value_tier"].map({"none": 0, "low": 1, "medium": 2, "high": 3}).to_numpy()

    assert roc_auc_score(big, tier) >= 0.8
    lift = big[tier == 3].mean() / big.mean()
    assert lift >= 3.0, lift


def test_preferences_recover_favourite_category_and_price_sensitivity(synthetic_profiles, db):
    _, frame, _ = synthetic_profiles
    truth = frame["customer__ground_truth__parameters"]
    favourite = truth.map(lambda p: p["favourite_category"])
    top = frame["traits"].map(lambda t: (t["top_categories"] or [{"name": None}])[0]["name"])
    sensitivity = frame["traits"].map(lambda t: t["price_sensitivity"])
    known = sensitivity.notna()

    assert (favourite == top).mean() >= 0.6  # 12 categories: chance is 0.08; measured 0.785
    rho = spearmanr(truth.map(lambda p: p["price_sensitivity"])[known], sensitivity[known]).statistic
    assert rho >= 0.7, rho  # measured 0.809


def test_profile_carries_named_traits_labels_and_a_readable_explanation(synthetic_profiles, db):
    profile = Profile.objects.filter(value_tier="high").select_related("customer").first()

    traits = profile.traits
    for name in ("recency_days", "frequency", "monetary", "average_order_value", "tenure_days", "activity_trend",
                 "view_to_cart", "cart_to_purchase", "refunds", "preferred_hour", "top_channel", "top_device",
                 "top_categories", "top_brands", "price_percentile", "price_sensitivity", "degree",
                 "referrals_made", "neighbours_net_value", "age_band", "gender", "region"):
        assert name in traits, name
    assert traits["frequency"] > 0 and traits["monetary"] > 0
    assert abs(sum(traits["category_shares"].values()) - 1.0) < 0.01
    assert profile.explanation["top_categories"] == traits["top_categories"]
    assert len(profile.explanation["distinctive"]) == 3
    assert all(abs(d["z"]) > 0 for d in profile.explanation["distinctive"])


def test_feature_report_ranks_features_against_next_30_day_purchase(synthetic_profiles, db):
    report = FeatureSet.objects.get(is_active=True).report

    assert report["target"].startswith("purchase within 30 days")
    assert 0 < report["positives"] < report["customers"]
    by_name = {f["name"]: f["mutual_information"] for f in report["features"]}
    # purchase history carries information about purchasing again; the hour of day hardly any
    assert by_name["frequency"] > 5 * max(by_name["hour_sin"], 0.001)
    assert [f["rank"] for f in report["features"]] == list(range(1, len(by_name) + 1))
    assert {c["name"] for c in report["combinations"]} == {c.name for c in preprocessing.COMBINATIONS}
    # a recency-discounted order count earns its place: more information than any single feature
    decayed = next(c for c in report["combinations"] if c["name"] == "frequency_decayed")
    assert decayed["kept"] and decayed["mutual_information"] > max(by_name.values())
    assert "frequency_decayed" in FeatureSet.objects.get(is_active=True).feature_names
    assert report["pca"]["components"] == 16 and 0 < report["pca"]["explained_variance"] <= 1


def test_refresh_reuses_the_fitted_pipeline_unchanged(synthetic_profiles, db):
    feature_set = FeatureSet.objects.get(is_active=True)
    customer_id = Profile.objects.order_by("customer_id").values_list("customer_id", flat=True).first()
    before = Profile.objects.get(pk=customer_id)

    customers_refresh(customer_ids=[customer_id])

    after = Profile.objects.get(pk=customer_id)
    assert FeatureSet.objects.get(pk=feature_set.pk).pipeline_sha256 == feature_set.pipeline_sha256
    assert after.traits == before.traits and np.allclose(after.feature_vector, before.feature_vector)
    assert after.snapshot_at > before.snapshot_at


def test_a_refresh_never_overwrites_a_profile_from_a_later_snapshot(synthetic_profiles, db):
    customer_id = Profile.objects.order_by("-customer_id").values_list("customer_id", flat=True).first()
    later = pd.Timestamp("2100-01-01", tz="UTC")
    Profile.objects.filter(pk=customer_id).update(snapshot_at=later, traits={"marker": "newer"})

    written = services.profiles_store(customer_ids=[customer_id], feature_set=FeatureSet.objects.get(is_active=True))

    assert written == 0
    assert Profile.objects.get(pk=customer_id).traits == {"marker": "newer"}


def test_a_tampered_pipeline_is_refused(synthetic_profiles, db):
    feature_set = FeatureSet.objects.get(is_active=True)

    with pytest.raises(preprocessing.PipelineIntegrityError):
        preprocessing.pipeline_load(bytes(feature_set.pipeline) + b"x", feature_set.pipeline_sha256,
                                    keys=feature_sets._pipeline_signing_keys())
