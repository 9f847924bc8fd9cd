"""Outside DEBUG the process refuses to start without every key from the environment (a generated
suppression key would silently un-suppress every erased subject); generated development keys are
created readable by their owner only, from the first byte."""

import os
import stat
import subprocess
import sys

import pytest
from django.conf import settings

from config.env import ConfigurationError, dev_secret

KEYS = ("SECRET_KEY", "PSEUDONYM_KEY", "SUPPRESSION_KEY", "PII_ENCRYPTION_KEYS")
VALUES = {"SECRET_KEY": "k" * 50, "PSEUDONYM_KEY": "p" * 32, "SUPPRESSION_KEY": "s" * 32,
          "PII_ENCRYPTION_KEYS": "c_AF7wpV6opUwQ48IzGO3snidC8U7PUOW5K0_RQ3WyE="}


def _start(**env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in (*KEYS, "DEBUG", "PORTRAIT_REQUIRE_SECRETS")}
    environment.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"],
        cwd=settings.BASE_DIR, env=environment, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("missing", KEYS)
def test_without_debug_a_missing_key_is_a_start_up_error_naming_it(missing):
    result = _start(**{k: v for k, v in VALUES.items() if k != missing})

    assert result.returncode != 0
    assert f"{missing} is not set" in result.stderr


def test_without_debug_every_key_from_the_environment_starts():
    result = _start(**VALUES)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_a_generated_key_file_is_owner_only_from_creation(tmp_path, monkeypatch):
    monkeypatch.delenv("SOME_DEV_KEY", raising=False)
    monkeypatch.setattr("pathlib.Path.chmod", lambda *args, **kwargs: None)  # no fixing the mode afterwards
    old_umask = os.umask(0)
    try:
        value = dev_secret("SOME_DEV_KEY", tmp_path / "secrets" / "some_key", generate=True)
    finally:
        os.umask(old_umask)

    path = tmp_path / "secrets" / "some_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().strip() == value and len(value) >= 40
    assert dev_secret("SOME_DEV_KEY", path, generate=True) == value  # reused, not replaced


def test_a_key_is_never_generated_when_generation_is_off(tmp_path, monkeypatch):
    monkeypatch.delenv("SOME_DEV_KEY", raising=False)

    with pytest.raises(ConfigurationError):
        dev_secret("SOME_DEV_KEY", tmp_path / "some_key", generate=False)
    assert not (tmp_path / "some_key").exists()
