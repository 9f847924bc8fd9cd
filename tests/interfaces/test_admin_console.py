"""The operators' picture pages: the dashboard's figures, a customer's profile page, the embedding
map and the feature report, on one small synthetic shop built once for the module; and every page
on an empty store."""

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.db.models import Max, Sum

from config import dashboard
from config.celery import app as celery_app
from ingestion.pseudonyms import customer_key, pii_decrypt
from ingestion.models import Customer, Event, EventType, ImportJob
from profiles import page
from profiles.models import FeatureSet, Profile
from segments import services as segment_services

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def shop(django_db_setup, django_db_blocker, make_shop):
    with django_db_blocker.unblock():
        make_shop(customers=250, events=12_000, seed=3)
        segment = segment_services.segment_create_rule(name="big spenders", rule='value_tier = "high"', refresh="none")
        segment_services.segment_refresh(segment_id=segment.pk)
        yield segment
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def operator(shop, admin_client):
    return admin_client


def _chart(html: str, chart_id: str) -> dict:
    match = re.search(rf'<script id="{chart_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no chart {chart_id} on the page"
    return json.loads(match.group(1))


def _busiest_profile() -> Profile:
    return Profile.objects.select_related("customer", "feature_set").order_by("-events_included", "pk").first()


def test_dashboard_counts_match_the_store(shop):
    latest = Event.objects.aggregate(latest=Max("occurred_at"))["latest"]

    summary = dashboard.dashboard_summary(now=latest)

    assert summary["customers"].value == Customer.objects.count() and not summary["customers"].estimated
    assert summary["profiles"].value == Profile.objects.count() > 0
    assert summary["events"].value == Event.objects.count()
    assert summary["events_24h"] == Event.objects.filter(occurred_at__gte=latest - timedelta(hours=24)).count() > 0
    assert summary["events_7d"] == Event.objects.filter(occurred_at__gte=latest - timedelta(days=7)).count()
    assert summary["events_7d"] > summary["events_24h"]
    newest_jobs = ImportJob.objects.order_by("-created_at").values_list("pk", flat=True)[:5]
    assert [job.pk for job in summary["import_jobs"]] == list(newest_jobs)
    oldest = Profile.objects.order_by("watermark").values_list("watermark", flat=True).first()
    assert summary["freshness"]["oldest_watermark"] == oldest
    assert summary["model"] is None


def test_large_tables_are_sized_by_the_planner_estimate_not_counted(shop):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ingestion_event")
    original = dashboard.EXACT_COUNT_LIMIT
    dashboard.EXACT_COUNT_LIMIT = 1000
    try:
        rows = dashboard.table_rows(table="ingestion_event")
    finally:
        dashboard.EXACT_COUNT_LIMIT = original

    assert rows.estimated
    assert abs(rows.value - Event.objects.count()) <= 0.2 * Event.objects.count()


def test_queue_depths_read_the_broker_lists():
    # a Redis database no worker consumes (the test cache's), so no worker can pop the fake messages
    url = settings.CACHES["default"]["LOCATION"]
    client = redis.Redis.from_url(url)
    client.delete("ingest", "training")
    client.rpush("ingest", "a", "b")
    try:
        depths = dashboard.queue_depths(broker_url=url)
    finally:
        client.delete("ingest")

    assert depths["ingest"] == 2 and depths["training"] == 0
    assert set(depths) == {"default", "ingest", "profiles", "segments", "training"}


def test_dashboard_page_shows_tiles_and_says_unavailable_when_the_broker_is_down(operator, monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:1/0")

    response = operator.get("/admin/")

    html = response.content.decode()
    assert response.status_code == 200
    tile = html[html.index('id="tile-queues"'):html.index('id="tile-privacy"')]
    assert "unavailable" in tile
    customers = html[html.index('id="tile-customers"'):html.index('id="tile-events-24h"')]
    assert f">{Customer.objects.count()}<" in customers
    assert "/admin/profiles/profile/map/" in html and "/admin/profiles/featureset/report/" in html
    assert f"/admin/ingestion/importjob/{ImportJob.objects.latest('created_at').pk}/change/" in html


def test_profile_page_charts_hold_the_customers_series(operator):
    profile = _busiest_profile()

    response = operator.get(f"/admin/profiles/profile/{profile.pk}/change/")

    html = response.content.decode()
    assert response.status_code == 200
    activity = _chart(html, "chart-activity")
    last_day = Event.objects.filter(customer_id=profile.pk).aggregate(m=Max("occurred_at"))["m"]
    in_window = Event.objects.filter(
        customer_id=profile.pk, occurred_at__date__gte=(last_day - timedelta(days=89)).date()
    ).count()
    assert activity["type"] == "bar" and activity["options"]["scales"]["x"]["stacked"]
    assert sum(sum(d["data"]) for d in activity["data"]["datasets"]) == in_window > 0
    assert len(activity["data"]["labels"]) == 90

    spend = _chart(html, "chart-spend")
    purchases = Event.objects.filter(customer_id=profile.pk, event_type=EventType.PURCHASE).aggregate(s=Sum("value"))["s"]
    refunds = Event.objects.filter(customer_id=profile.pk, event_type=EventType.REFUND).aggregate(s=Sum("value"))["s"]
    net = (purchases or Decimal(0)) - (refunds or Decimal(0))
    assert sum(spend["data"]["datasets"][0]["data"]) == pytest.approx(float(net), abs=0.05)

    categories = _chart(html, "chart-categories")
    with_item = Event.objects.filter(customer_id=profile.pk, item__isnull=False).count()
    assert sum(sum(d["data"]) for d in categories["data"]["datasets"]) <= with_item
    assert categories["data"]["labels"][0] in {c["name"] for c in profile.explanation["top_categories"]} | {
        c["category"] for c in page.profile_categories(customer_id=profile.pk)}

    rfm = _chart(html, "chart-rfm")
    highlighted = rfm["data"]["datasets"][-1]["data"][0]
    assert highlighted == {"x": profile.traits["recency_days"], "y": profile.traits["net_monetary"]}
    assert len(rfm["data"]["datasets"][0]["data"]) > 100

    percentiles = _chart(html, "chart-percentiles")
    scores = page.profile_trait_percentiles(profile=profile)
    frequency = percentiles["data"]["labels"].index("frequency")
    expected = next(s["percentile"] for s in scores if s["name"] == "frequency")
    assert percentiles["data"]["datasets"][0]["data"][frequency] == expected
    assert all(0 <= p <= 100 for p in percentiles["data"]["datasets"][0]["data"])


def test_profile_page_shows_neighbours_segments_and_recommendations(operator, shop):
    profile = Profile.objects.filter(value_tier="high").select_related("customer").order_by("pk").first()

    html = operator.get(f"/admin/profiles/profile/{profile.pk}/change/").content.decode()

    neighbours = html[html.index('id="profile-neighbours"'):html.index('id="profile-recommendations"')]
    assert neighbours.count("/admin/profiles/profile/") == 10
    assert f"/admin/segments/segment/{shop.pk}/change/" in html
    recommendations = html[html.index('id="profile-recommendations"'):]
    assert "/admin/ingestion/item/" in recommendations
    assert f"/admin/ingestion/customer/{profile.pk}/change/" in html


def test_profile_page_masks_personal_data_for_an_operator_without_view_pii(shop, client):
    user = get_user_model().objects.create_user("analyst", password="pw-for-tests-only", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_profile"))
    client.force_login(user)
    profile = Profile.objects.select_related("customer").exclude(customer__email_encrypted=None).order_by("pk").first()
    email = pii_decrypt(profile.customer.email_encrypted)

    html = client.get(f"/admin/profiles/profile/{profile.pk}/change/").content.decode()

    assert email and email not in html
    assert f"{email[0]}***@{email.partition('@')[2]}" in html
    assert "every reveal is audited" not in html


def test_customer_page_links_to_its_profile_page(operator):
    profile = _busiest_profile()

    html = operator.get(f"/admin/ingestion/customer/{profile.pk}/change/").content.decode()

    assert f'href="/admin/profiles/profile/{profile.pk}/change/"' in html


def test_profile_changelist_finds_a_customer_by_external_id(operator):
    # the generator numbers its customers C0000001, C0000002, …
    customer = Customer.objects.get(key=customer_key(source="synthetic", external_id="C0000042"))

    html = operator.get("/admin/profiles/profile/", {"q": "C0000042"}).content.decode()

    rows = re.findall(r'href="/admin/profiles/profile/(\d+)/change/', html)
    assert rows == [str(customer.pk)]


def test_map_points_link_to_their_profiles_and_colour_by_segment(operator, shop):
    response = operator.get("/admin/profiles/profile/map/", {"colour": "segment", "segment": shop.pk})

    html = response.content.decode()
    assert response.status_code == 200
    chart = _chart(html, "chart-map")
    points = sum(len(d["data"]) for d in chart["data"]["datasets"])
    visible = Profile.objects.exclude(fused=None).filter(customer__consent_profiling=True, customer__merged_into=None)
    assert points == min(visible.count(), page.MAP_SAMPLE) > 100
    links = [url for dataset in chart["links"] for url in dataset]
    assert len(links) == points
    linked = {int(url.split("/")[-3]) for url in links}
    assert linked == set(visible.values_list("pk", flat=True))
    members = set(shop.memberships.values_list("customer_id", flat=True))
    by_label = {d["label"]: d for d in chart["data"]["datasets"]}
    member_links = chart["links"][list(by_label).index("in the segment")]
    assert {int(url.split("/")[-3]) for url in member_links} == members & linked
    assert all(len(lines) == 3 for dataset in chart["tooltips"] for lines in dataset)


def test_map_projection_by_value_tier_groups_points_by_their_tier(shop):
    projection = page.profiles_map(space="traits", colour_by="value_tier")

    tiers = dict(Profile.objects.values_list("pk", "value_tier"))
    assert projection["space"] == "traits" and len(projection["points"]) > 100
    assert all(p["group"] == tiers[p["customer_id"]] for p in projection["points"])
    assert 0 < projection["explained_variance"] <= 1


def test_feature_report_bars_are_the_information_gain_of_each_feature(operator):
    feature_set = FeatureSet.objects.get(is_active=True)

    html = operator.get("/admin/profiles/featureset/report/").content.decode()

    chart = _chart(html, "chart-information-gain")
    expected = sorted(feature_set.report["features"], key=lambda f: f["rank"])
    assert chart["data"]["labels"] == [f["name"] for f in expected]
    assert chart["data"]["datasets"][0]["data"] == [round(f["mutual_information"], 5) for f in expected]
    assert chart["options"]["indexAxis"] == "y"
    assert html.count("<tr>") >= len(feature_set.report["combinations"])
    change = operator.get(f"/admin/profiles/featureset/{feature_set.pk}/change/").content.decode()
    assert f"/admin/profiles/featureset/{feature_set.pk}/report/" in change


def test_every_page_answers_on_an_empty_store(shop, client):
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute(
            "TRUNCATE ingestion_event, ingestion_customer, ingestion_customerkey, ingestion_importjob, profiles_profile, profiles_featureset,"
            " segments_segment CASCADE"
        )
    client.force_login(get_user_model().objects.create_superuser("ops2", "ops2@example.com", "pw-for-tests-only"))

    pages = {url: client.get(url) for url in (
        "/admin/", "/admin/profiles/profile/map/", "/admin/profiles/profile/map/?colour=segment&space=embedding",
        "/admin/profiles/featureset/report/", "/admin/profiles/profile/",
    )}

    assert {url: r.status_code for url, r in pages.items()} == dict.fromkeys(pages, 200)
    assert "No profiles with vectors" in pages["/admin/profiles/profile/map/"].content.decode()
    assert "No feature set yet" in pages["/admin/profiles/featureset/report/"].content.decode()
    assert "No profiles yet." in pages["/admin/"].content.decode()
