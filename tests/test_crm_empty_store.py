"""The CRM admin pages and the demand API answer on an empty store; the refit button is POST-only."""

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


def test_demand_api_says_404_before_any_forecast(make_api_client):
    response = make_api_client("profiles:read").get("/api/v1/demand/categories")

    assert response.status_code == 404 and "not been fitted" in response.json()["detail"]
