"""Access export: everything held about one subject, as a zip of `subject.json` and `events.csv`,
encrypted under the PII key and written under MEDIA_ROOT/exports with an unguessable name and an
expiry (PRIVACY_EXPORT_DAYS). The file is deleted when it expires (Celery beat) and when its subject
is erased; it is decrypted only for an audited download."""

from __future__ import annotations

import io
import json
import secrets
import zipfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from config.csv_stream import csv_lines
from ingestion.pseudonyms import pii_decrypt, pii_decrypt_bytes, pii_encrypt_bytes
from ingestion.selectors import customer_by_external_id
from ingestion.models import Customer, Event, EventType
from privacy.models import PrivacyRequest

EVENT_COLUMNS = ("occurred_at", "event_type", "item_sku", "quantity", "value", "currency", "rating", "session_id",
                 "channel", "device", "order_id", "context")


def _record(customer: Customer) -> dict:
    return {
        "source": customer.source,
        "email": pii_decrypt(customer.email_encrypted) if customer.email_encrypted else None,
        "name": pii_decrypt(customer.name_encrypted) if customer.name_encrypted else None,
        "phone": pii_decrypt(customer.phone_encrypted) if customer.phone_encrypted else None,
        "age": customer.age, "age_band": customer.age_band, "gender": customer.gender, "region": customer.region,
        "signup_date": customer.signup_date.isoformat() if customer.signup_date else None,
        "loyalty_member": customer.is_loyalty_member, "consents": {
            "profiling": customer.consent_profiling, "marketing": customer.consent_marketing},
        "attributes": customer.attributes, "created_at": customer.created_at.isoformat(),
    }


def _profile(customer: Customer) -> dict | None:
    from profiles.models import Profile

    profile = Profile.objects.filter(customer=customer).first()
    if profile is None:
        return None
    return {
        "traits": profile.traits, "value_tier": profile.value_tier, "lifecycle_stage": profile.lifecycle_stage,
        "explanation": profile.explanation, "computed_at": profile.computed_at.isoformat(),
        "embedding_model_version": profile.model_version_id,
    }


def _prediction(customer: Customer) -> dict | None:
    """Forecasts, CRM audiences and the risk scorecard, with what drove them."""
    from crm.selectors import customer_prediction_get

    prediction = customer_prediction_get(customer_id=customer.pk)
    if prediction is None:
        return None
    return {
        "expected_purchases": prediction.expected_purchases, "probability_active": prediction.probability_active,
        "churn_probability": prediction.churn_probability, "expected_spend": prediction.expected_spend,
        "expected_value_per_purchase": prediction.expected_value_per_purchase,
        "lifetime_value": prediction.lifetime_value, "past_spend": prediction.past_spend,
        "predicted_by": prediction.source, "drivers": prediction.drivers, "audiences": list(prediction.audiences),
        "risk": {"score": prediction.risk_score, "band": prediction.risk_band, "reasons": prediction.risk_reasons},
        "computed_at": prediction.computed_at.isoformat(),
    }


def _merge_history(customer: Customer) -> list[dict]:
    """Every identity merge the subject took part in (an anonymous visitor recognised as them),
    undone ones included: which side they were, how, why, how sure, what moved."""
    from django.db.models import Q

    from profiles.models import IdentityMerge

    merges = IdentityMerge.objects.filter(Q(merged=customer) | Q(survivor=customer)).order_by("created_at", "pk")
    return [{
        "role": "merged" if merge.merged_id == customer.pk else "survivor", "method": merge.method,
        "reason": merge.reason, "confidence": merge.confidence, "merged_at": merge.created_at.isoformat(),
        "events_moved": len(merge.moved_event_ids), "undone_at": merge.undone_at.isoformat() if merge.undone_at else None,
        "undo_reason": merge.undo_reason,
    } for merge in merges]


def _events_csv(customer: Customer) -> tuple[str, int]:
    names = dict(EventType.choices)
    events = (Event.objects.filter(customer=customer).select_related("item").order_by("occurred_at", "arrival")
              .iterator(chunk_size=5000))
    count = 0

    def rows():
        nonlocal count
        for e in events:
            count += 1
            yield [e.occurred_at.isoformat(), str(names.get(e.event_type, e.event_type)), e.item.sku if e.item else "",
                   e.quantity, "" if e.value is None else e.value, e.currency, "" if e.rating is None else e.rating,
                   e.session_id, e.channel, e.device, e.order_id,
                   "" if e.context is None else json.dumps(e.context, ensure_ascii=False, sort_keys=True)]

    text = "".join(csv_lines(list(EVENT_COLUMNS), rows()))
    return text, count


def access_export_write(*, request: PrivacyRequest, external_id: str) -> dict:
    from segments.selectors import segments_of_customer
    from training.models import ModelVersion

    customer = customer_by_external_id(source=request.source, external_id=external_id)
    bundle: dict = {"request": request.pk, "generated_at": timezone.now().isoformat(), "subject": {"external_id": external_id}}
    events_csv, events = "", 0
    if customer is not None:
        events_csv, events = _events_csv(customer)
        bundle.update(
            record=_record(customer), profile=_profile(customer), segments=segments_of_customer(customer_id=customer.pk),
            social_edges={"out": customer.edges_out.count(), "in": customer.edges_in.count()},
            prediction=_prediction(customer), identity_merges=_merge_history(customer),
            # every run reads every live customer who consents to profiling
            model_versions_trained_on_data=sorted(ModelVersion.objects.values_list("pk", flat=True))
            if customer.consent_profiling else [],
            events=events,
        )
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("subject.json", json.dumps(bundle, indent=2, ensure_ascii=False, default=str))
        archive.writestr("events.csv", events_csv)
    _exports_directory().mkdir(parents=True, exist_ok=True)
    _export_files_delete([request.pk])  # a retried request leaves one export, not two
    path = _exports_directory() / f"access-{request.pk}-{secrets.token_hex(16)}.zip.enc"
    path.write_bytes(pii_encrypt_bytes(archive_bytes.getvalue()))
    expires = timezone.now() + timedelta(days=settings.PRIVACY_EXPORT_DAYS)
    PrivacyRequest.objects.filter(pk=request.pk).update(export_path=str(path), export_expires_at=expires)
    return {"export": {"events": events, "found": customer is not None, "expires_at": expires.isoformat()}}


def _exports_directory() -> Path:
    return Path(settings.MEDIA_ROOT) / "exports"


def _export_files_delete(request_ids) -> int:
    """Every export file written for these requests (found by name, so an orphan of a crashed write
    goes too); returns how many were deleted."""
    removed = 0
    for request_id in request_ids:
        for path in _exports_directory().glob(f"access-{int(request_id)}-*"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def access_export_open(*, request: PrivacyRequest) -> bytes | None:
    """The decrypted zip of a live export, or None when there is none or it expired."""
    if not request.export_path or not request.export_expires_at or request.export_expires_at < timezone.now():
        return None
    try:
        return pii_decrypt_bytes(Path(request.export_path).read_bytes())
    except FileNotFoundError:
        return None


def access_exports_expire(*, now=None) -> int:
    """Delete the files of exports past their expiry (beat, privacy.tasks); returns how many."""
    expired = PrivacyRequest.objects.filter(export_expires_at__lt=now or timezone.now()).exclude(export_path="")
    ids = list(expired.values_list("pk", flat=True))
    removed = _export_files_delete(ids)
    PrivacyRequest.objects.filter(pk__in=ids).update(export_path="")
    return removed


def subject_exports_erase(*, subject_tokens: list[str]) -> int:
    """Delete every access export of this subject (erasure), its requests known by the subject's
    tokens under any suppression key; returns the files deleted."""
    requests = PrivacyRequest.objects.filter(subject_token__in=subject_tokens, kind="access_export")
    ids = list(requests.values_list("pk", flat=True))
    removed = _export_files_delete(ids)
    PrivacyRequest.objects.filter(pk__in=ids).update(export_path="", export_expires_at=None)
    return removed
