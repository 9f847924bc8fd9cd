"""Reads of the privacy app."""

from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from privacy.suppression_tokens import customer_suppression_tokens, suppression_tokens
from privacy.models import PrivacyRequest, RequestState, RestrictedSubject, SuppressedSubject

# Every check matches a token under any key of the SUPPRESSION_KEYS ring (privacy.suppression_tokens):
# a subject suppressed under an older key stays suppressed after a new key is put first.


def subject_is_suppressed(*, source: str, external_id: str) -> bool:
    tokens = list(suppression_tokens(source=source, external_id=external_id))
    return SuppressedSubject.objects.filter(token__in=tokens).exists()


def customer_is_suppressed(*, key: str) -> bool:
    """Whether the stored customer with this pseudonymous key is a suppressed subject."""
    return SuppressedSubject.objects.filter(customer_token__in=list(customer_suppression_tokens(customer_key=key))).exists()


def _external_ids_listed(model, source: str, external_ids: Iterable[str]) -> set[str]:
    token_of = {token: str(e) for e in set(external_ids)
                for token in suppression_tokens(source=source, external_id=str(e))}
    if not token_of:
        return set()
    found = model.objects.filter(token__in=list(token_of)).values_list("token", flat=True)
    return {token_of[t] for t in found}


def suppressed_external_ids(*, source: str, external_ids: Iterable[str]) -> set[str]:
    """Those of these external ids (of one source) that belong to suppressed subjects: one query,
    one HMAC per distinct id and key."""
    return _external_ids_listed(SuppressedSubject, source, external_ids)


def restricted_external_ids(*, source: str, external_ids: Iterable[str]) -> set[str]:
    """Those of these external ids (of one source) whose subjects restricted processing."""
    return _external_ids_listed(RestrictedSubject, source, external_ids)


def suppressed_subject_get(*, source: str, external_id: str) -> SuppressedSubject | None:
    """The subject's row on the suppression list, under whichever key it was made."""
    tokens = list(suppression_tokens(source=source, external_id=external_id))
    return SuppressedSubject.objects.filter(token__in=tokens).first()


def restricted_subject_get(*, source: str, external_id: str) -> RestrictedSubject | None:
    tokens = list(suppression_tokens(source=source, external_id=external_id))
    return RestrictedSubject.objects.filter(token__in=tokens).first()


def privacy_request_audit(*, request) -> list:
    """The audit entries of one request, oldest first: who filed, verified, executed, was refused."""
    from privacy.models import AuditEntry

    return list(AuditEntry.objects.filter(target_type=request._meta.label_lower, target_id=str(request.pk))
                .order_by("at", "id"))


def executing_stale() -> Q:
    """Executing for longer than PRIVACY_EXECUTION_STALE_SECONDS: the process running it died."""
    stale = timezone.now() - timedelta(seconds=settings.PRIVACY_EXECUTION_STALE_SECONDS)
    return Q(state=RequestState.EXECUTING, executed_at__lt=stale)


def privacy_requests_retryable() -> list:
    """Requests to execute again: partially failed ones, and executing ones whose process died;
    each at most 5 attempts."""
    return list(PrivacyRequest.objects.filter(Q(state=RequestState.PARTIALLY_FAILED) | executing_stale(),
                                              attempts__lt=5).order_by("pk"))


def privacy_requests_stuck() -> list:
    """Requests an operator must look at: executing long after their process died, or failed five
    times (beat's sweep stops retrying them)."""
    return list(PrivacyRequest.objects.filter(
        executing_stale() | Q(state=RequestState.PARTIALLY_FAILED, attempts__gte=5)).order_by("pk"))
