"""Writes of the privacy app: the suppression list and privacy requests (the ingest lock is
privacy.guard)."""

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from config.db_router import replica_reads_fenced
from ingestion.selectors import customer_key_resolve
from privacy.suppression_tokens import customer_suppression_token, suppression_key_id, suppression_token
from privacy.models import SuppressedSubject
from privacy.selectors import executing_stale, suppressed_subject_get


def subject_suppress(*, source: str, external_id: str, reason: str) -> SuppressedSubject:
    """Put a subject on the suppression list (idempotent: a second call keeps the first reason, and
    a subject already listed under an older suppression key is not listed twice)."""
    if subject := suppressed_subject_get(source=source, external_id=external_id):
        return subject
    subject, _ = SuppressedSubject.objects.get_or_create(
        token=suppression_token(source=source, external_id=external_id),
        defaults={
            "customer_token": customer_suppression_token(
                customer_key=customer_key_resolve(source=source, external_id=external_id)),
            "key_id": suppression_key_id(), "reason": reason,
        },
    )
    return subject


# --- privacy requests ------------------------------------------------------------------------------

class RequestError(ValueError):
    """The request cannot move as asked (wrong state); the message says why."""


class NotAllowed(PermissionError):
    """The actor lacks the permission to verify or execute privacy requests."""


EXECUTE_PERMISSION = "privacy.execute_privacyrequest"


def _may_execute(actor) -> bool:
    """Compliance users (the permission) and API clients holding the `compliance` scope."""
    from access.authentication import ApiClient

    if isinstance(actor, ApiClient):
        return "compliance" in actor.scopes
    return bool(actor is not None and actor.has_perm(EXECUTE_PERMISSION))


def privacy_request_file(*, kind: str, source: str, external_id: str, actor, note: str = ""):
    """File a request. The subject is matched through its keyed tokens; the external id is kept
    only encrypted, and only until execution needs it."""
    from ingestion.pseudonyms import pii_encrypt
    from ingestion.selectors import customer_by_external_id
    from privacy.audit import actor_label, audit_record
    from privacy.models import PrivacyRequest, RequestKind

    if kind not in RequestKind.values:
        raise RequestError(f"unknown kind {kind!r}")
    with transaction.atomic():
        request = PrivacyRequest.objects.create(
            kind=kind, source=source, subject_token=suppression_token(source=source, external_id=external_id),
            subject_key_id=suppression_key_id(),
            subject_encrypted=pii_encrypt(external_id), note=note, filed_by=actor_label(actor),
            customer=customer_by_external_id(source=source, external_id=external_id),
        )
        audit_record(action="privacy_request.filed", actor=actor, target=request, details={"kind": kind})
    return request


def privacy_request_verify(*, request, actor):
    """The compliance officer has checked the requester is the subject."""
    from privacy.audit import actor_label, audit_record
    from privacy.models import PrivacyRequest, RequestState

    if not _may_execute(actor):
        audit_record(action="privacy_request.verify_refused", actor=actor, target=request)
        raise NotAllowed("only the compliance group may verify privacy requests")
    with transaction.atomic():
        moved = PrivacyRequest.objects.filter(pk=request.pk, state=RequestState.RECEIVED).update(
            state=RequestState.VERIFIED, verified_by=actor_label(actor), verified_at=timezone.now(),
        )
        if not moved:
            raise RequestError(f"request #{request.pk} is {PrivacyRequest.objects.get(pk=request.pk).state}, not received")
        audit_record(action="privacy_request.verified", actor=actor, target=request)
    request.refresh_from_db()
    return request


def privacy_request_execute(*, request, actor=None):
    """Carry out a verified request (or retry a partially failed one). Idempotent: every step
    can run again; a crash leaves the request `executing` or `partially_failed`, and the retry
    completes it."""
    from ingestion.pseudonyms import pii_decrypt
    from privacy.audit import actor_label, audit_record
    from privacy.models import PrivacyRequest, RequestState

    if actor is not None and not _may_execute(actor):
        audit_record(action="privacy_request.execute_refused", actor=actor, target=request)
        raise NotAllowed("only the compliance group may execute privacy requests")
    # an execution still marked executing is taken over only once it is stale: its process died
    claimed = PrivacyRequest.objects.filter(
        Q(state__in=[RequestState.VERIFIED, RequestState.PARTIALLY_FAILED]) | executing_stale(), pk=request.pk,
    ).update(state=RequestState.EXECUTING, executed_by=actor_label(actor), executed_at=timezone.now(),
             attempts=F("attempts") + 1)
    request.refresh_from_db()
    if not claimed:
        raise RequestError(f"request #{request.pk} is {request.state}; only verified requests are executed")
    audit_record(action="privacy_request.executing", actor=actor, target=request, details={"attempt": request.attempts})
    try:
        external_id = pii_decrypt(request.subject_encrypted)
        receipt = _KIND_HANDLERS[request.kind](request=request, external_id=external_id)
    except Exception as error:
        PrivacyRequest.objects.filter(pk=request.pk).update(
            state=RequestState.PARTIALLY_FAILED, error=f"{error.__class__.__name__}: {error}"[:2000],
        )
        audit_record(action="privacy_request.failed", actor=actor, target=request,
                     details={"attempt": request.attempts, "error": error.__class__.__name__})
        raise
    PrivacyRequest.objects.filter(pk=request.pk).update(
        state=RequestState.COMPLETED, completed_at=timezone.now(), receipt=receipt, error="", subject_encrypted=None,
    )
    audit_record(action="privacy_request.completed", actor=actor, target=request,
                 details={"stores": sorted(receipt.get("stores", {}))})
    request.refresh_from_db()
    return request


def privacy_request_close(*, request, actor):
    from privacy.audit import actor_label, audit_record
    from privacy.models import PrivacyRequest, RequestState

    if not _may_execute(actor):
        audit_record(action="privacy_request.close_refused", actor=actor, target=request)
        raise NotAllowed("only the compliance group may close privacy requests")
    moved = PrivacyRequest.objects.filter(pk=request.pk, state=RequestState.COMPLETED).update(
        state=RequestState.CLOSED, closed_by=actor_label(actor), closed_at=timezone.now(),
    )
    if not moved:
        raise RequestError(f"request #{request.pk} is not completed")
    audit_record(action="privacy_request.closed", actor=actor, target=request)
    request.refresh_from_db()
    return request


def _erasure(*, request, external_id: str) -> dict:
    from privacy.erasure import erasure_execute

    return erasure_execute(request=request, external_id=external_id)


def _restriction(*, request, external_id: str) -> dict:
    """Profiling opt-out: the customer stays (orders may need its events) but consent is withdrawn,
    what was derived from its data (profile, traits, vectors, value snapshot, segment memberships,
    churn/value/risk predictions) goes, and every build, refresh, read, training run and CLV fit
    leaves it out from now on. The restriction is recorded on the privacy side, where a later
    customer upsert cannot override it."""
    from crm.services import customer_predictions_erase
    from ingestion.selectors import customer_ids_by_external_id
    from ingestion.services import customer_consent_withdraw
    from privacy.models import RestrictedSubject
    from privacy.selectors import restricted_subject_get
    from profiles.services import customer_profiles_derived_erase
    from segments.services import customer_memberships_erase

    with replica_reads_fenced(), transaction.atomic():  # no replica serves the profile once this commits
        # tokens from the external id, under the newest key: the request's own token may be under a
        # key rotated out since it was filed; a subject restricted under an older key is not listed twice
        if restricted_subject_get(source=request.source, external_id=external_id) is None:
            RestrictedSubject.objects.get_or_create(
                token=suppression_token(source=request.source, external_id=external_id), defaults={
                    "customer_token": customer_suppression_token(
                        customer_key=customer_key_resolve(source=request.source, external_id=external_id)),
                    "key_id": suppression_key_id()})
        ids = customer_ids_by_external_id(source=request.source, external_ids=[external_id])
        updated = customer_consent_withdraw(customer_ids=ids)
        memberships = customer_memberships_erase(customer_ids=ids)
        predictions = customer_predictions_erase(customer_ids=ids)
        derived = customer_profiles_derived_erase(customer_ids=ids)
    at = timezone.now().isoformat()
    return {"stores": {"customers": {"consent_profiling_withdrawn": updated, "at": at},
                       "restriction_list": {"added": True, "at": at},
                       "segment_memberships": {"removed": memberships, "at": at},
                       "predictions": {"removed": predictions, "at": at},
                       **{name: {"removed": count, "at": at} for name, count in derived.items()}}}


def _unsuppression(*, request, external_id: str) -> dict:
    from privacy.models import SuppressedSubject
    from privacy.suppression_tokens import suppression_tokens

    # under whichever suppression key the subject was listed
    tokens = list(suppression_tokens(source=request.source, external_id=external_id))
    removed, _ = SuppressedSubject.objects.filter(token__in=tokens).delete()
    return {"suppression_token": request.subject_token,
            "stores": {"suppression_list": {"removed": removed, "at": timezone.now().isoformat()}}}


def _restriction_lift(*, request, external_id: str) -> dict:
    """The subject withdraws their objection: off the restriction list (under whichever key they were
    listed) and consenting to profiling again; the next build or refresh profiles them."""
    from ingestion.selectors import customer_ids_by_external_id
    from ingestion.services import customer_consent_give
    from privacy.models import RestrictedSubject
    from privacy.suppression_tokens import suppression_tokens

    with transaction.atomic():
        tokens = list(suppression_tokens(source=request.source, external_id=external_id))
        removed, _ = RestrictedSubject.objects.filter(token__in=tokens).delete()
        given = customer_consent_give(
            customer_ids=customer_ids_by_external_id(source=request.source, external_ids=[external_id]))
    at = timezone.now().isoformat()
    return {"stores": {"restriction_list": {"removed": removed, "at": at},
                       "customers": {"consent_profiling_given": given, "at": at}}}


def _access_export(*, request, external_id: str) -> dict:
    from privacy.export import access_export_write

    return access_export_write(request=request, external_id=external_id)


_KIND_HANDLERS = {"erasure": _erasure, "restriction": _restriction, "unsuppression": _unsuppression,
                  "restriction_lift": _restriction_lift, "access_export": _access_export}
