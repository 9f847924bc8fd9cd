"""config.browser_middleware: the token APIs pass the admin's session, user, second factor and messages by;
every other path goes through them as before."""

import pytest
from django.conf import settings
from django.http import HttpResponse

from config.browser_middleware import AuthenticationMiddleware, MessageMiddleware, OTPMiddleware, SessionMiddleware

CHAIN = [SessionMiddleware, AuthenticationMiddleware, OTPMiddleware, MessageMiddleware]


def _seen_by_the_view(request) -> dict:
    seen = {}

    def view(request):
        seen.update(session=hasattr(request, "session"), user=hasattr(request, "user"),
                    messages=hasattr(request, "_messages"))
        return HttpResponse("ok")

    handler = view
    for middleware in reversed(CHAIN):
        handler = middleware(handler)
    assert handler(request).status_code == 200
    return seen


@pytest.mark.parametrize("path", ["/api/v1/profiles/ab", "/api/v1/events", "/v1/batch"])
def test_a_token_api_request_passes_them_by(rf, path):
    assert _seen_by_the_view(rf.get(path)) == {"session": False, "user": False, "messages": False}


@pytest.mark.parametrize("path", ["/admin/", "/admin/login/", "/api/docs/", "/api/schema/", "/i18n/setlang/", "/v1"])
def test_every_other_request_goes_through_them(rf, path):
    assert _seen_by_the_view(rf.get(path)) == {"session": True, "user": True, "messages": True}


def test_they_are_the_ones_the_settings_use_and_subclass_djangos():
    from django.contrib.auth.middleware import AuthenticationMiddleware as Django
    from django.utils.module_loading import import_string

    used = [import_string(path) for path in settings.MIDDLEWARE]
    assert all(middleware in used for middleware in CHAIN)
    assert issubclass(AuthenticationMiddleware, Django)  # the admin's system check looks for a subclass


@pytest.mark.django_db
def test_an_api_answer_sets_no_cookie_and_the_admin_login_still_does(client, make_api_client):
    api = make_api_client("profiles:read").get("/api/v1/profiles/" + "0" * 64)
    login = client.get("/admin/login/")

    assert api.status_code == 404 and not api.cookies and "Cookie" not in api.get("Vary", "")
    assert login.status_code == 200 and "csrftoken" in login.cookies
