"""The one place that reads the process environment; everything else imports from here."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()


class ConfigurationError(RuntimeError):
    """A required setting is missing or malformed; raised at start-up, never later."""


def env_required(name: str) -> str:
    value = env.str(name, default="")
    if not value:
        raise ConfigurationError(
            f"{name} is not set. Set it in the environment (see README, 'Configuration')."
        )
    return value


def dev_secret(name: str, path: Path) -> str:
    """A secret for local development, created once under var/ and reused.

    Production sets every secret in the environment; `PORTRAIT_REQUIRE_SECRETS=1` turns a missing
    one into a start-up error instead of this fallback.
    """
    value = env.str(name, default="")
    if value:
        return value
    if env.bool("PORTRAIT_REQUIRE_SECRETS", default=False):
        env_required(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        import base64
        import secrets

        path.write_text(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        path.chmod(0o600)
    return path.read_text().strip()
