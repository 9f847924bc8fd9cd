"""A real browser (Debian's Chromium via Playwright) drives the admin: log in, upload an event file,
watch the Celery worker import it, read the counts and the quarantined line."""


import pytest

from tests.conftest import STAFF_PASSWORD
from tests.interfaces.browser import admin_log_in, screenshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

def test_operator_uploads_a_file_in_the_admin_and_sees_it_imported(
    superuser, live_server, celery_worker, tmp_path, browser_page
):
    events = tmp_path / "shop-events.csv"
    events.write_text(
        "customer_id,item_id,event_type,timestamp,value\n"
        "c1,A,view,2025-01-01T10:00:00Z,\n"
        "c1,A,purchase,2025-01-01T10:01:00Z,9.99\n"
        "c2,B,teleport,2025-01-01T10:02:00Z,\n"
    )
    page = browser_page

    admin_log_in(page, live_server.url, "operator", STAFF_PASSWORD)
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
    screenshot(page, "admin-import-job")

    assert rows.split()[-1] == "2"
    assert "event_type: unknown type" in quarantined and "teleport" in quarantined
