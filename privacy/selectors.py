"""Reads of the privacy app."""

from privacy.identity import customer_suppression_token, suppression_token
from privacy.models import SuppressedSubject


def subject_is_suppressed(*, source: str, external_id: str) -> bool:
    return SuppressedSubject.objects.filter(token=suppression_token(source=source, external_id=external_id)).exists()


def customer_is_suppressed(*, key: str) -> bool:
    """Whether the stored customer with this pseudonymous key is a suppressed subject."""
    return SuppressedSubject.objects.filter(customer_token=customer_suppression_token(customer_key=key)).exists()
