"""The operator's profile screens: a profile with its explanation, the feature report, and a
batch build started from the admin."""

import pytest

from config.celery import app as celery_app
from profiles import builds
from profiles.models import FeatureSet, Profile, ProfileBuild

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(admin_client, events_client):
    # everyone shops in January; every other customer buys again in February (the report's target)
    rows = []
    for c in range(25):
        for i, kind in enumerate(["view", "add_to_cart", "purchase"][: 1 + c % 3]):
            rows.append({"customer_id": f"c{c}", "event_type": kind, "item_id": f"sku-{(c + i) % 4}",
                         "timestamp": f"2025-01-{1 + c:02d}T1{i}:00:00Z", **({"value": "10.00"} if kind == "purchase" else {})})
        if c % 2 == 0:
            rows.append({"customer_id": f"c{c}", "event_type": "purchase", "item_id": "sku-1", "value": f"{5 + c}.00",
                         "timestamp": f"2025-02-{1 + c:02d}T12:00:00Z"})
    assert events_client.post("/api/v1/events", {"events": rows}, format="json").status_code == 200
    builds.profiles_build()
    return admin_client


def test_profile_page_shows_labels_top_categories_and_distinctive_traits(operator_client):
    profile = Profile.objects.filter(value_tier="high").first()

    page = operator_client.get(f"/admin/profiles/profile/{profile.pk}/change/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "Where this customer differs most" in text
    assert profile.explanation["distinctive"][0]["feature"] in text
    assert ">high<" in text or "high" in text


def test_feature_set_page_shows_information_gain_per_feature(operator_client):
    feature_set = FeatureSet.objects.get(is_active=True)

    page = operator_client.get(f"/admin/profiles/featureset/{feature_set.pk}/change/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "Information gain per feature" in text
    assert "recency_per_frequency" in text


def test_start_button_queues_a_build_and_refuses_a_second_while_one_runs(operator_client):
    celery_app.control.purge()
    ProfileBuild.objects.create(status="running")

    response = operator_client.post("/admin/profiles/profilebuild/start/", follow=True)

    assert "already running" in response.content.decode()
    assert operator_client.get("/admin/profiles/profilebuild/start/").status_code == 405
    listing = operator_client.get("/admin/profiles/profilebuild/")
    assert 'http-equiv="refresh"' in listing.content.decode()
    assert "Build all profiles now" in listing.content.decode()


def test_profile_screens_speak_chinese(operator_client):
    feature_set = FeatureSet.objects.get(is_active=True)
    profile = Profile.objects.first()

    builds = operator_client.get("/admin/profiles/profilebuild/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    report = operator_client.get(f"/admin/profiles/featureset/{feature_set.pk}/change/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    page = operator_client.get(f"/admin/profiles/profile/{profile.pk}/change/", HTTP_ACCEPT_LANGUAGE="zh-hans")

    assert "立即构建全部画像" in builds
    assert "各特征的信息增益" in report.content.decode()
    assert "生命周期阶段" in page.content.decode() and "该客户与总体差异最大之处" in page.content.decode()
