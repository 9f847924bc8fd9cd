"""Settings come only from the environment; a production start without a secret fails clearly."""

import os
import subprocess
import sys

from django.conf import settings


def start_django(**env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "PSEUDONYM_KEY", "PII_ENCRYPTION_KEYS", "SUPPRESSION_KEY")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"],
        cwd=settings.BASE_DIR, env=environment, capture_output=True, text=True, timeout=60,
    )


def test_missing_secret_is_a_start_up_error_when_secrets_are_required():
    result = start_django(DJANGO_SETTINGS_MODULE="config.settings", PORTRAIT_REQUIRE_SECRETS="1")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_values_come_from_the_environment():
    result = start_django(
        DJANGO_SETTINGS_MODULE="config.settings", PORTRAIT_REQUIRE_SECRETS="1", DEBUG="true",
        SECRET_KEY="k" * 50, PSEUDONYM_KEY="p" * 32, SUPPRESSION_KEY="s" * 32, PII_ENCRYPTION_KEYS="ZmVybmV0LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OTA=",
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"


def test_check_deploy_passes_with_production_style_settings():
    """The deployment checklist (`manage.py check --deploy`) has nothing to say about a production
    environment: secrets from the environment, DEBUG off, HTTPS with HSTS and secure cookies."""
    import secrets

    from cryptography.fernet import Fernet

    environment = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "PSEUDONYM_KEY", "PII_ENCRYPTION_KEYS",
                                                                    "SUPPRESSION_KEY", "DEBUG")}
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings", PORTRAIT_REQUIRE_SECRETS="1", SECRET_KEY=secrets.token_urlsafe(50),
        PSEUDONYM_KEY=secrets.token_hex(32), SUPPRESSION_KEY=secrets.token_hex(32),
        PII_ENCRYPTION_KEYS=Fernet.generate_key().decode(), ALLOWED_HOSTS="portrait.example.com",
        SECURE_SSL_REDIRECT="1", SECURE_HSTS_SECONDS="31536000", SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1", SESSION_COOKIE_SECURE="1", CSRF_COOKIE_SECURE="1",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR, env=environment, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "no issues" in result.stdout
