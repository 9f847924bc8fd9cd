"""The one place that reads the process environment; everything else imports from here."""

import re
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


KEY_ID_PATTERN = r"[A-Za-z0-9_-]{1,16}"
LEGACY_KEY_ID = "k1"


def keyring(name: str, single_name: str, path: Path, *, generate: bool) -> list[tuple[str, str]]:
    """A ring of HMAC keys, newest first, as (key id, secret) pairs: `name` holds
    "id:secret,id:secret,…"; without it the single key `single_name` (read as `dev_secret` does) is
    the ring of one, key id "k1", so a deployment that predates key ids needs no change.

    Setting both is refused: which one counts would be a guess, and a wrong guess drops a key that
    stored tokens still need."""
    text = env.str(name, default="")
    if not text:
        return [(LEGACY_KEY_ID, dev_secret(single_name, path, generate=generate))]
    if env.str(single_name, default=""):
        raise ConfigurationError(f"both {name} and {single_name} are set; keep only {name} (the single key is "
                                 f"the key id {LEGACY_KEY_ID!r} of the ring, see README 'Rotating keys')")
    ring = []
    for entry in text.split(","):
        key_id, _, secret = entry.strip().partition(":")
        if not re.fullmatch(KEY_ID_PATTERN, key_id) or not secret:
            raise ConfigurationError(f"{name}: every entry is key-id:secret, the id 1 to 16 letters, digits, "
                                     f"'-' or '_' (an entry reads {key_id[:16]!r}…)")
        ring.append((key_id, secret))
    ids = [key_id for key_id, _ in ring]
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"{name}: a key id appears twice ({', '.join(ids)})")
    return ring
