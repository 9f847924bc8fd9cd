"""Reads of the privacy app."""

from collections.abc import Iterable

from privacy.suppression_tokens import customer_suppression_token, suppression_token
from privacy.models import RestrictedSubject, SuppressedSubject


def subject_is_suppressed(*, source: str, external_id: str) -> bool:
    return SuppressedSubject.objects.filter(token=suppression_token(source=source, external_id=external_id)).exists()


def customer_is_suppressed(*, key: str) -> bool:
    """Whether the stored customer with this pseudonymous key is a suppressed subject."""
    return SuppressedSubject.objects.filter(customer_token=customer_suppression_token(customer_key=key)).exists()


def suppressed_external_ids(*, source: str, external_ids: Iterable[str]) -> set[str]:
    """Those of these external ids (of one source) that belong to suppressed subjects: one query,
    one HMAC per distinct id."""
    token_of = {suppression_token(source=source, external_id=str(e)): str(e) for e in set(external_ids)}
    if not token_of:
        return set()
    found = SuppressedSubject.objects.filter(token__in=list(token_of)).values_list("token", flat=True)
    return {token_of[t] for t in found}


def restricted_external_ids(*, source: str, external_ids: Iterable[str]) -> set[str]:
    """Those of these external ids (of one source) whose subjects restricted processing."""
    token_of = {suppression_token(source=source, external_id=str(e)): str(e) for e in set(external_ids)}
    if not token_of:
        return set()
    found = RestrictedSubject.objects.filter(token__in=list(token_of)).values_list("token", flat=True)
    return {token_of[t] for t in found}


def privacy_request_audit(*, request) -> list:
    """The audit entries of one request, oldest first: who filed, verified, executed, was refused."""
    from privacy.models import AuditEntry

    return list(AuditEntry.objects.filter(target_type=request._meta.label_lower, target_id=str(request.pk))
                .order_by("at", "id"))
