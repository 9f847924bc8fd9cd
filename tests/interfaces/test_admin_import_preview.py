"""The admin's import form previews an order export before importing it: the first lines with the
mapping and value maps applied, the errors by field, the values of enumerated columns; then
imports the very file previewed without a second upload."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import translation

from ingestion.models import Customer, Event, ImportJob, QuarantinedRow

pytestmark = pytest.mark.django_db

EXPORT = (
    "Customer ID,Age,Gender,Loyalty Member,SKU,Order Status,Total Price,Quantity,Purchase Date\n"
    "1001,34,Male,Yes,SKU1,Completed,20.00,1,2025-03-01T10:00:00\n"
    "1001,34,Male,Yes,SKU2,Cancelled,15.00,1,2025-03-02T10:00:00\n"
    "1002,51,Female,No,SKU1,Completed,20.00,1,2025-03-02T11:00:00\n"
    "1003,27,Robot,No,SKU3,Pending,9.00,1,2025-03-03T11:00:00\n"
)
MAPPING = {
    "column__events__customer_id": "Customer ID", "column__events__item_id": "SKU",
    "column__events__timestamp": "Purchase Date", "column__events__value": "Total Price",
    "column__events__quantity": "Quantity", "column__events__event_type": "Order Status",
    "valuemap__events__event_type": "Completed=purchase, Cancelled=cancellation",
    "column__events__age": "Age", "column__events__gender": "Gender",
    "column__events__is_loyalty_member": "Loyalty Member",
}


def form_data(**fields):
    return {"format": "csv", "kind": "events", "source": "shop", "mapping_json": "", **MAPPING, **fields}


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


def test_preview_shows_mapped_lines_errors_and_value_counts_and_imports_nothing(admin_client, media):
    response = admin_client.post("/admin/ingestion/importjob/add/", form_data(
        _preview="1", upload=SimpleUploadedFile("orders.csv", EXPORT.encode())))

    assert response.status_code == 200
    preview = response.context["import_preview"]
    assert (preview["sampled"], preview["rejected"]) == (4, 1)
    assert preview["fields"][:4] == ["customer_id", "item_id", "event_type", "timestamp"]
    assert [row["cells"][2]["value"] for row in preview["rows"]] == ["purchase", "cancellation", "purchase", ""]
    assert preview["rows"][3]["errors"] == ["event_type: 'Pending' is not in the value map",
                                            "gender: 'Robot' is not a gender we know (male, female, other)"]
    assert ("gender", "'Robot' is not a gender we know (male, female, other)", 1) in preview["error_counts"]
    counts = dict(preview["value_counts"])
    assert counts["event_type"] == [("Completed", "purchase", 2), ("Cancelled", "cancel", 1), ("Pending", "", 1)]
    assert ("Yes", "True", 2) in counts["is_loyalty_member"]
    html = response.content.decode()
    assert 'id="import-preview"' in html and "is not in the value map" in html
    for model in (ImportJob, Event, Customer, QuarantinedRow):
        assert model.objects.count() == 0, model

    token = response.context["adminform"].form["staged_upload"].value()
    saved = admin_client.post("/admin/ingestion/importjob/add/", form_data(staged_upload=token, _save="1"))

    assert saved.status_code == 302, saved.context["adminform"].form.errors
    job = ImportJob.objects.get()
    assert job.options["value_maps"] == {"event_type": {"Completed": "purchase", "Cancelled": "cancellation"}}
    assert job.options["mapping"]["gender"] == "Gender"
    assert open(job.file_path).read() == EXPORT  # the file previewed, not a second upload


def test_a_forged_or_missing_file_is_refused(admin_client, media):
    forged = admin_client.post("/admin/ingestion/importjob/add/", form_data(staged_upload="/etc/passwd", _save="1"))
    missing = admin_client.post("/admin/ingestion/importjob/add/", form_data(_preview="1"))

    assert "no longer available" in forged.context["adminform"].form.errors["staged_upload"][0]
    assert missing.context["adminform"].form.errors["upload"] == ["Choose the file to import."]
    assert missing.context.get("import_preview") is None
    assert ImportJob.objects.count() == 0


def test_a_value_map_that_cannot_be_read_names_the_field(admin_client, media):
    response = admin_client.post("/admin/ingestion/importjob/add/", form_data(
        _preview="1", valuemap__events__event_type="Completed", upload=SimpleUploadedFile("o.csv", EXPORT.encode())))

    assert "file value=ours" in response.context["adminform"].form.errors["valuemap__events__event_type"][0]
    assert response.context.get("import_preview") is None


def test_preview_is_translated(admin_client, media):
    with translation.override("zh-hans"):
        response = admin_client.post("/admin/ingestion/importjob/add/", form_data(
            _preview="1", upload=SimpleUploadedFile("orders.csv", EXPORT.encode())), HTTP_ACCEPT_LANGUAGE="zh-hans")

    html = response.content.decode()
    assert "预览" in html and "枚举列的取值" in html and "值映射" in html


def test_a_mapping_the_file_cannot_satisfy_is_said_in_the_preview(admin_client, media):
    response = admin_client.post("/admin/ingestion/importjob/add/", form_data(
        _preview="1", column__events__gender="Sex", upload=SimpleUploadedFile("orders.csv", EXPORT.encode())))

    assert "mapped column(s) not in the file header" in response.context["import_preview_error"]
    assert "Sex" in response.content.decode()
    assert ImportJob.objects.count() == 0
