"""A real browser (Debian's Chromium via Playwright) maps an order export in the admin, previews
it (value maps applied, the bad line named), then imports the file previewed on the Celery worker."""

import pytest

from tests.conftest import STAFF_PASSWORD
from tests.interfaces.browser import admin_log_in, screenshot
from tests.interfaces.test_admin_import_preview import EXPORT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_operator_previews_an_order_export_then_imports_it(superuser, live_server, celery_worker, tmp_path,
                                                           browser_page):
    orders = tmp_path / "orders.csv"
    orders.write_text(EXPORT)
    page = browser_page

    admin_log_in(page, live_server.url, "operator", STAFF_PASSWORD)
    page.goto(f"{live_server.url}/admin/ingestion/importjob/add/")
    page.select_option("#id_format", "csv")
    page.fill("#id_source", "shop")
    page.set_input_files("#id_upload", str(orders))
    for field, column in (("customer_id", "Customer ID"), ("item_id", "SKU"), ("timestamp", "Purchase Date"),
                          ("value", "Total Price"), ("quantity", "Quantity"), ("event_type", "Order Status"),
                          ("gender", "Gender"), ("is_loyalty_member", "Loyalty Member")):
        page.fill(f"#id_column__events__{field}", column)
    page.fill("#id_valuemap__events__event_type", "Completed=purchase, Cancelled=cancellation")
    page.click("#import-preview-button")

    page.wait_for_selector("#import-preview")
    preview = page.inner_text("#import-preview")
    screenshot(page, "admin-import-preview")
    assert "预览" in preview and "cancellation" in preview
    assert "event_type: 'Pending' is not in the value map" in preview
    assert "'Robot' is not a gender we know" in preview

    page.click("input[name=_save]")  # the file previewed: no second upload
    page.wait_for_selector("ul.messagelist >> text=已排队")
    page.click("table#result_list tbody tr th a")
    page.wait_for_selector("div.field-status >> text=成功", timeout=60_000)
    inserted = page.inner_text("div.field-rows_inserted")
    quarantined = page.inner_text("#quarantined_rows-group")

    assert inserted.split()[-1] == "3"
    assert "'Pending' is not in the value map" in quarantined
