"""Access export: everything held about one subject, as a zip of `subject.json` and `events.csv`,
written under MEDIA_ROOT/exports with an unguessable name and an expiry (PRIVACY_EXPORT_DAYS)."""

from __future__ import annotations

import json
import secrets
import zipfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from config.csv_stream import csv_lines
from ingestion.pseudonyms import customer_key, pii_decrypt
from ingestion.models import Customer, Event, EventType
from privacy.models import PrivacyRequest

EVENT_COLUMNS = ("occurred_at", "event_type", "item_sku", "quantity", "value", "currency", "rating", "channel", "device",
                 "order_id")


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


def _events_csv(customer: Customer) -> tuple[str, int]:
    names = dict(EventType.choices)
    events = (Event.objects.filter(customer=customer).select_related("item").order_by("occurred_at")
              .iterator(chunk_size=5000))
    count = 0

    def rows():
        nonlocal count
        for e in events:
            count += 1
            yield [e.occurred_at.isoformat(), str(names.get(e.event_type, e.event_type)), e.item.sku if e.item else "",
                   e.quantity, "" if e.value is None else e.value, e.currency, "" if e.rating is None else e.rating,
                   e.channel, e.device, e.order_id]

    text = "".join(csv_lines(list(EVENT_COLUMNS), rows()))
    return text, count


def access_export_write(*, request: PrivacyRequest, external_id: str) -> dict:
    from segments.selectors import segments_of_customer
    from training.models import ModelVersion

    customer = Customer.objects.filter(key=customer_key(source=request.source, external_id=external_id)).first()
    bundle: dict = {"request": request.pk, "generated_at": timezone.now().isoformat(), "subject": {"external_id": external_id}}
    events_csv, events = "", 0
    if customer is not None:
        events_csv, events = _events_csv(customer)
        bundle.update(
            record=_record(customer), profile=_profile(customer), segments=segments_of_customer(customer_id=customer.pk),
            social_edges={"out": customer.edges_out.count(), "in": customer.edges_in.count()},
            # every run reads every live customer who consents to profiling
            model_versions_trained_on_data=sorted(ModelVersion.objects.values_list("pk", flat=True))
            if customer.consent_profiling else [],
            events=events,
        )
    directory = Path(settings.MEDIA_ROOT) / "exports"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"access-{request.pk}-{secrets.token_hex(16)}.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("subject.json", json.dumps(bundle, indent=2, ensure_ascii=False, default=str))
        archive.writestr("events.csv", events_csv)
    expires = timezone.now() + timedelta(days=settings.PRIVACY_EXPORT_DAYS)
    PrivacyRequest.objects.filter(pk=request.pk).update(export_path=str(path), export_expires_at=expires)
    return {"export": {"events": events, "found": customer is not None, "expires_at": expires.isoformat()}}
