"""The admin that can reveal PII, execute erasures and mint tokens: login lockout after repeated
failures (django-axes), a TOTP second factor for the Compliance group (django-otp), short sessions and
secure cookies outside DEBUG."""

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client, override_settings
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from privacy.roles import COMPLIANCE

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"


def _staff(username: str, *, compliance: bool = False) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    if compliance:
        user.groups.add(Group.objects.get(name=COMPLIANCE))
    return user


def _log_in(client: Client, username: str, password: str, otp_token: str = ""):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password,
                                                      "otp_token": otp_token})


def _code(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift)
    return f"{totp.token():0{device.digits}d}"


def test_repeated_failed_logins_lock_the_account_even_against_the_right_password():
    _staff("operator")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _log_in(client, "operator", "wrong").status_code == 200  # the form again, with its error

    assert _log_in(client, "operator", "wrong").status_code == 429
    locked = _log_in(client, "operator", PASSWORD)

    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_an_operator_without_a_device_logs_in_with_the_password_alone():
    _staff("operator")
    client = Client()

    assert _log_in(client, "operator", PASSWORD).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_compliance_user_with_a_totp_device_needs_its_code():
    user = _staff("compliance", compliance=True)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)

    without_code = Client()
    assert _log_in(without_code, "compliance", PASSWORD).status_code == 200
    assert without_code.get("/admin/").status_code == 302

    with_code = Client()
    response = _log_in(with_code, "compliance", PASSWORD, _code(device))
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert with_code.get("/admin/").status_code == 200


def test_a_session_that_skipped_the_second_factor_is_refused_for_a_user_with_a_device(client):
    user = _staff("compliance", compliance=True)
    TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    client.force_login(user)  # a password-only session

    assert client.get("/admin/").status_code == 302


@override_settings(ADMIN_COMPLIANCE_TOTP_REQUIRED=True)
def test_when_required_a_compliance_user_without_a_device_is_refused_and_an_operator_is_not():
    compliance = Client()
    compliance.force_login(_staff("compliance", compliance=True))
    operator = Client()
    operator.force_login(_staff("operator"))

    assert compliance.get("/admin/").status_code == 302
    assert operator.get("/admin/").status_code == 200


def test_sessions_are_short_and_cookies_secure_outside_debug():
    assert settings.DEBUG is False
    assert settings.SESSION_COOKIE_AGE <= 3600 and settings.SESSION_SAVE_EVERY_REQUEST
    assert settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE and settings.SESSION_COOKIE_HTTPONLY
