"""Suppression tokens: keyed HMAC-SHA256 under SUPPRESSION_KEY, apart from the pseudonym key."""

import hashlib
import hmac

from django.conf import settings


def _token(message: str) -> str:
    return hmac.new(settings.SUPPRESSION_KEY.encode(), message.encode(), hashlib.sha256).hexdigest()


def suppression_token(*, source: str, external_id: str) -> str:
    """The subject's token: stable per (source namespace, external id), not reversible."""
    return _token(f"{source}\x1f{external_id}")


def customer_suppression_token(*, customer_key: str) -> str:
    """The token of a stored customer, from its pseudonymous key."""
    return _token(f"customer\x1f{customer_key}")
