"""Suppression tokens: keyed HMAC-SHA256 under the SUPPRESSION_KEYS ring, apart from the pseudonym keys.

A token is made under the newest key (and its row records that key id); a check matches a token
under any key of the ring, so putting a new key first never un-suppresses anyone. An erased
subject's external id is gone, so its token cannot be re-made: a key stays in the ring while rows
use it (privacy.key_rotation reports them, and a system check refuses a ring without it).
"""

import hashlib
import hmac

from django.conf import settings


def suppression_key_id() -> str:
    """The id of the newest suppression key, the one new tokens are made under."""
    return settings.SUPPRESSION_KEYS[0][0]


def suppression_key_ids() -> list[str]:
    return [key_id for key_id, _ in settings.SUPPRESSION_KEYS]


def _token(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _subject_message(source: str, external_id: str) -> str:
    return f"{source}\x1f{external_id}"


def _customer_message(customer_key: str) -> str:
    return f"customer\x1f{customer_key}"


def suppression_token(*, source: str, external_id: str) -> str:
    """The subject's token under the newest key: stable per (source namespace, external id), not
    reversible. For writing; a check matches `suppression_tokens`."""
    return _token(settings.SUPPRESSION_KEYS[0][1], _subject_message(source, external_id))


def suppression_tokens(*, source: str, external_id: str) -> dict[str, str]:
    """The subject's token under every key of the ring → that key's id."""
    message = _subject_message(source, external_id)
    return {_token(secret, message): key_id for key_id, secret in settings.SUPPRESSION_KEYS}


def customer_suppression_token(*, customer_key: str) -> str:
    """The token of a stored customer, from its pseudonymous key, under the newest key."""
    return _token(settings.SUPPRESSION_KEYS[0][1], _customer_message(customer_key))


def customer_suppression_tokens(*, customer_key: str) -> dict[str, str]:
    """The customer's token under every key of the ring → that key's id."""
    message = _customer_message(customer_key)
    return {_token(secret, message): key_id for key_id, secret in settings.SUPPRESSION_KEYS}
