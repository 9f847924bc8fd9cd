"""Every API token expires; the demo token `make run` prints cannot file or execute privacy requests."""

import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from access.models import ApiToken
from access.services import api_token_authenticate, api_token_create, api_token_revoke

pytestmark = pytest.mark.django_db


def test_a_new_token_expires_after_the_configured_lifetime():
    token, _ = api_token_create(name="app", scopes=["profiles:read"])

    lifetime = token.expires_at - token.created_at
    assert abs(lifetime - timedelta(days=settings.API_TOKEN_LIFETIME_DAYS)) < timedelta(minutes=1)


def test_an_expired_token_is_refused_with_401(client):
    token, raw = api_token_create(name="app", scopes=["profiles:read"], lifetime=timedelta(days=1))
    path = "/api/v1/segments"
    assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert api_token_authenticate(raw=raw) is None
    assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_a_revoked_token_is_refused_on_its_very_next_request(client):
    # inside the test's transaction every request reads the token; outside one, see test_token_cache.py
    token, raw = api_token_create(name="app", scopes=["profiles:read"])
    path = "/api/v1/segments"
    assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    api_token_revoke(token=token)

    assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_a_token_cannot_be_made_without_a_positive_lifetime():
    with pytest.raises(ValueError):
        api_token_create(name="app", scopes=["profiles:read"], lifetime=timedelta(0))


def test_the_demo_token_has_no_compliance_scope_and_expires():
    call_command("ensure_admin", stdout=io.StringIO())

    demo = ApiToken.objects.get(name="demo")
    assert "compliance" not in demo.scopes
    assert {"events:write", "profiles:read", "similarity:read", "segments:write"} <= set(demo.scopes)
    assert demo.expires_at is not None and demo.expires_at <= timezone.now() + timedelta(days=31)


def test_the_admin_creates_a_token_with_the_lifetime_it_was_given(admin_client):
    form = admin_client.get("/admin/access/apitoken/add/")
    assert f'value="{settings.API_TOKEN_LIFETIME_DAYS}"' in form.content.decode()

    response = admin_client.post("/admin/access/apitoken/add/", {
        "name": "crm app", "scopes": ["profiles:read"], "lifetime_days": "7", "requests_per_minute": "",
    })

    assert response.status_code == 302
    token = ApiToken.objects.get(name="crm app")
    assert abs(token.expires_at - token.created_at - timedelta(days=7)) < timedelta(minutes=1)
