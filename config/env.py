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
            f"{name} is not set. Set it in the environment (see README, 'Configuration'); for local "
            "development only, DEBUG=1 generates keys under var/secrets/."
        )
    return value


def dev_secret(name: str, path: Path, *, generate: bool) -> str:
    """The secret `name` from the environment; else, only when `generate` (DEBUG), a key for local
    development created once at `path` and reused.

    Without `generate` a missing secret is a start-up error: a production process that made itself a
    new suppression key would silently un-suppress every erased subject, a new pseudonym key would
    split every customer in two.
    """
    value = env.str(name, default="")
    if value:
        return value
    if not generate:
        env_required(name)
    if not path.exists():
        import base64
        import os
        import secrets

        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # owner-only from the first byte: a file written first and chmod-ed after is readable in between
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip()
