"""A real browser (Debian's Chromium via Playwright) drives the admin: log in, upload an event file,
watch the Celery worker import it, read the counts and the quarantined line."""

from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def operator(transactional_db):
    return get_user_model().objects.create_superuser("operator", "op@example.com", "correct-horse-battery")


@pytest.fixture
def browser_page():
    """Requested after every fixture that touches the database: while Playwright's sync API runs,
    the test executes inside its event loop, where Django (rightly) refuses ORM calls."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required (make test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-hans"})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_operator_uploads_a_file_in_the_admin_and_sees_it_imported(
    operator, live_server, celery_worker, tmp_path, browser_page
):
    events = tmp_path / "shop-events.csv"
    events.write_text(
        "customer_id,item_id,event_type,timestamp,value\n"
        "c1,A,view,2025-01-01T10:00:00Z,\n"
        "c1,A,purchase,2025-01-01T10:01:00Z,9.99\n"
        "c2,B,teleport,2025-01-01T10:02:00Z,\n"
    )
    page = browser_page

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct-horse-battery")
    page.click("input[type=submit]")
    page.click("#content-main a:text-is('导入任务')")
    page.wait_for_url("**/admin/ingestion/importjob/")
    page.click("ul.object-tools a.addlink")
    page.wait_for_url("**/admin/ingestion/importjob/add/")
    page.select_option("#id_format", "csv")
    page.fill("#id_source", "shop")
    page.set_input_files("#id_upload", str(events))
    page.click("input[name=_save]")

    page.wait_for_selector("ul.messagelist >> text=已排队")
    page.click("table#result_list tbody tr th a")
    page.wait_for_selector("div.field-status >> text=成功", timeout=60_000)
    rows = page.inner_text("div.field-rows_inserted")
    quarantined = page.inner_text("#quarantined_rows-group")
    page.screenshot(path=str(Path(settings.BASE_DIR) / "var" / "admin-import-job.png"), full_page=True)

    assert rows.split()[-1] == "2"
    assert "event_type: unknown type" in quarantined and "teleport" in quarantined
