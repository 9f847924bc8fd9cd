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


def test_refit_never_redirects_off_the_site(admin_client):
    outside = admin_client.post("/admin/crm/clvfit/refit/", {"next": "https://evil.example/phish"})
    inside = admin_client.post("/admin/crm/clvfit/refit/", {"next": "/admin/crm/demandforecast/"}, follow=True)

    assert outside.status_code == 302 and outside["Location"] == "/admin/crm/clvfit/"
    assert inside.redirect_chain[-1][0] == "/admin/crm/demandforecast/"
    assert "being refitted" in inside.content.decode()  # queued on the (real) test broker


def test_fit_clv_refuses_a_horizon_below_one_day_and_an_empty_store():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="at least 1"):
        call_command("fit_clv", "--horizon-days", "0")
    with pytest.raises(CommandError, match="fewer than 20 customers"):
        call_command("fit_clv")
