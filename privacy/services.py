"""Writes of the privacy app."""

from ingestion.identity import customer_key
from privacy.identity import customer_suppression_token, suppression_token
from privacy.models import SuppressedSubject


def subject_suppress(*, source: str, external_id: str, reason: str) -> SuppressedSubject:
    """Put a subject on the suppression list (idempotent: a second call keeps the first reason)."""
    subject, _ = SuppressedSubject.objects.get_or_create(
        token=suppression_token(source=source, external_id=external_id),
        defaults={
            "customer_token": customer_suppression_token(customer_key=customer_key(source=source, external_id=external_id)),
            "reason": reason,
        },
    )
    return subject
