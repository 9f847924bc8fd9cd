"""Reads of the privacy app."""

from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import connection
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


def _external_ids_listed(model, source: str, external_ids: Iterable[str], token_cache: dict | None = None) -> set[str]:
    """Those of `external_ids` whose token is in `model`'s table. `token_cache` ({external id:
    tokens}, kept by the caller for one import of one source) saves the HMACs of ids seen before."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        # most of the time the list is empty: no token is worth computing or sending then
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")  # noqa: S608
        if not cursor.fetchone()[0]:
            return set()
        token_of = {}
        for external_id in {str(e) for e in external_ids}:
            tokens = token_cache.get(external_id) if token_cache is not None else None
            if tokens is None:
                tokens = list(suppression_tokens(source=source, external_id=external_id))
                if token_cache is not None:
                    token_cache[external_id] = tokens
            token_of.update(dict.fromkeys(tokens, external_id))
        if not token_of:
            return set()
        # one array parameter, not an IN list of thousands: a fifth of the client's work
        cursor.execute(f"SELECT token FROM {table} WHERE token = ANY(%s)", [list(token_of)])  # noqa: S608
        return {token_of[token] for (token,) in cursor.fetchall()}


def suppressed_external_ids(*, source: str, external_ids: Iterable[str], token_cache: dict | None = None) -> set[str]:
    """Those of these external ids (of one source) that belong to suppressed subjects: one query,
    one HMAC per distinct id and key."""
    return _external_ids_listed(SuppressedSubject, source, external_ids, token_cache)


def restricted_external_ids(*, source: str, external_ids: Iterable[str], token_cache: dict | None = None) -> set[str]:
    """Those of these external ids (of one source) whose subjects restricted processing."""
    return _external_ids_listed(RestrictedSubject, source, external_ids, token_cache)


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
