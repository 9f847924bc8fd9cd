"""A real browser (Debian's Chromium via Playwright) looks at the operators' picture pages on a
small synthetic shop: the dashboard's tiles, a profile page whose every chart is drawn with data,
the embedding map (hover shows a customer, a click opens its profile) and the feature report.
Full-page screenshots land in var/screenshots/ for reviewers."""


import pytest

from ingestion.models import Customer, ImportJob
from profiles.models import Profile
from tests.conftest import STAFF_PASSWORD
from tests.interfaces.browser import admin_log_in, chromium_page, screenshot

pytestmark = [pytest.mark.django_db(transaction=True)]

PROFILE_CHARTS = ("chart-activity", "chart-categories", "chart-spend", "chart-rfm", "chart-percentiles")


@pytest.fixture
def shop(transactional_db, make_shop, superuser):
    make_shop(customers=250, events=12_000, seed=3)
    from crm.services import clv_fit, demand_forecast_make

    demand_forecast_make(fit=clv_fit(), weeks=4)
    profile = Profile.objects.filter(value_tier="high").order_by("-events_included", "pk").first()
    return {"profile_id": profile.pk, "customers": Customer.objects.count(), "import_job_id": ImportJob.objects.get().pk}


@pytest.fixture
def browser_page():  # this module's pages in English, wider
    with chromium_page(language="en", width=1400) as page:
        yield page


def _rendered_points(page, chart_id: str) -> int:
    canvas = page.wait_for_selector(f'canvas[data-chart="{chart_id}"][data-rendered]')
    return int(canvas.get_attribute("data-rendered"))


def test_operator_sees_the_store_in_pictures(shop, live_server, browser_page):
    page = browser_page
    admin_log_in(page, live_server.url, "operator", STAFF_PASSWORD)

    # the dashboard
    page.wait_for_selector("#portrait-dashboard")
    assert page.inner_text("#tile-customers .value").strip() == str(shop["customers"])
    assert page.locator("#recent-imports tbody tr").count() == 1
    assert page.locator('#recent-imports a[href$="/importjob/%d/change/"]' % shop["import_job_id"]).count() == 1
    assert page.locator("#tile-queues td").count() == 10  # five queues, name and depth
    screenshot(page, "dashboard")

    # a profile page: every chart drawn with data
    page.goto(f"{live_server.url}/admin/profiles/profile/{shop['profile_id']}/change/")
    points = {chart: _rendered_points(page, chart) for chart in PROFILE_CHARTS}
    assert all(n > 0 for n in points.values()), points
    assert page.locator("#profile-neighbours tbody tr").count() == 10
    churn = page.inner_text("#prediction-churn").strip()
    assert churn.endswith("%") and 0 <= int(churn[:-1]) <= 100
    # 250 customers are too few to learn corrections: the page says BG/NBD alone predicts
    assert "BG/NBD" in page.inner_text("#prediction-drivers")
    screenshot(page, "profile")

    # the embedding map: a hover shows the customer, a click opens their profile
    page.goto(f"{live_server.url}/admin/profiles/profile/map/")
    assert _rendered_points(page, "chart-map") > 100
    screenshot(page, "embedding-map")
    target = page.evaluate("""() => {
        const canvas = document.querySelector('canvas[data-chart="chart-map"]');
        const chart = Chart.getChart(canvas);
        const point = chart.getDatasetMeta(0).data[0];
        const box = canvas.getBoundingClientRect();
        return {x: box.left + point.x, y: box.top + point.y};
    }""")
    page.mouse.move(target["x"], target["y"])
    page.wait_for_function("""() => Chart.getChart(document.querySelector('canvas[data-chart="chart-map"]'))
        .tooltip.getActiveElements().length > 0""")
    tooltip = page.evaluate("""() => Chart.getChart(document.querySelector('canvas[data-chart="chart-map"]'))
        .tooltip.body.flatMap(b => b.lines)""")
    assert len(tooltip) >= 3 and len(tooltip[0]) == 12  # short key, tier · stage, top category
    page.mouse.click(target["x"], target["y"])
    page.wait_for_url("**/admin/profiles/profile/*/change/")
    assert _rendered_points(page, "chart-activity") > 0

    # the feature report
    page.goto(f"{live_server.url}/admin/profiles/featureset/report/")
    assert _rendered_points(page, "chart-information-gain") > 10
    assert page.locator("#combinations tbody tr").count() > 0
    screenshot(page, "feature-report")

    # category demand: the weekly chart, the totals beside seasonal naive, the table
    page.goto(f"{live_server.url}/admin/crm/demandforecast/latest/")
    assert _rendered_points(page, "chart-demand") >= 4
    assert _rendered_points(page, "chart-demand-totals") > 0
    assert page.locator("#demand-table tbody tr").count() >= 5
    screenshot(page, "category-demand")

    # the operator switches the admin to Chinese: labels of the product's own pages are translated
    page.goto(f"{live_server.url}/admin/")
    page.select_option("#language-switch select", "zh-hans")
    page.wait_for_selector("#portrait-dashboard")
    page.wait_for_function("() => document.documentElement.lang === 'zh-hans'")
    dashboard_text = page.inner_text("#portrait-dashboard")
    assert "客户" in dashboard_text and "隐私请求" in dashboard_text
    assert "Customers" not in dashboard_text
    page.goto(f"{live_server.url}/admin/profiles/profile/{shop['profile_id']}/change/")
    assert "流失概率" in page.inner_text("#profile-prediction")
    screenshot(page, "profile-zh-hans")
