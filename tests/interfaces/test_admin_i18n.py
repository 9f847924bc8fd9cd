"""The admin serves Chinese operators through Django's translation machinery."""

import pytest

pytestmark = pytest.mark.django_db


def test_admin_index_in_simplified_chinese(admin_client):
    response = admin_client.get("/admin/", HTTP_ACCEPT_LANGUAGE="zh-hans")

    text = response.content.decode()
    assert response.status_code == 200
    assert "导入任务" in text and "客户" in text and "数据接入" in text


def test_admin_index_in_english_by_default(admin_client):
    text = admin_client.get("/admin/").content.decode()

    assert "Import jobs" in text and "导入任务" not in text


def test_customer_page_masks_pii(admin_client):
    from ingestion.models import Customer
    from ingestion.services import customers_upsert

    customers_upsert(rows=[{"external_id": "x1", "email": "wang.fang@example.com", "phone": "+86 138 0000 1234"}], source="default")
    customer = Customer.objects.get()

    text = admin_client.get(f"/admin/ingestion/customer/{customer.pk}/change/").content.decode()

    assert "w***@example.com" in text
    assert "wang.fang" not in text and "0000 1234" not in text
