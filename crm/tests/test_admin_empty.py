"""The CRM admin pages answer on an empty store, and the refit button is POST-only."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", ["/admin/crm/clvfit/", "/admin/crm/customerprediction/", "/admin/crm/demandforecast/",
                                 "/admin/crm/customerprediction/?audience=rising"])
def test_pages_answer_without_any_fit(admin_client, url):
    assert admin_client.get(url).status_code == 200


def test_latest_demand_without_a_forecast_goes_to_the_list(admin_client):
    response = admin_client.get("/admin/crm/demandforecast/latest/")

    assert response.status_code == 302 and response["Location"].endswith("/admin/crm/demandforecast/")


def test_refit_is_post_only(admin_client):
    assert admin_client.get("/admin/crm/clvfit/refit/").status_code == 405
