"""Erasure of one data subject from every store, with a receipt.

Order matters:
1. One transaction holds the ingest lock exclusively (writers of subject data hold it shared and
   check the suppression list inside their transaction), puts the subject on the suppression list
   and deletes every row that names them. A writer that was running has finished before the
   deletes; one that starts later sees the suppression and refuses the rows. So nothing the
   subject sends while being erased survives.
2. Outside the database: pending-refresh keys in Redis and retained import files that contain the
   subject's id are removed.
3. The unlearning ledger records which model versions had been trained on the subject.
Every step is idempotent, so a retry after a crash completes the erasure; the receipt counts what
each attempt removed (later attempts find nothing left where an earlier one finished).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ingestion.pseudonyms import customer_key, pii_decrypt
from ingestion.models import Customer, ImportJob
from privacy.suppression_tokens import customer_suppression_token, suppression_token
from privacy.models import ErasureLedger, PrivacyRequest, SuppressedSubject
from privacy.guard import erasure_lock

# Tables that reference customers, deleted before the customers themselves (counts for the
# receipt; the ORM cascade would remove most of them too, but one at a time).
_CUSTOMER_TABLES = (
    ("events", "ingestion_event", "customer_id"),
    ("segment_memberships", "segments_segmentmembership", "customer_id"),
    ("profiles", "profiles_profile", "customer_id"),
    ("predictions", "crm_customerprediction", "customer_id"),
    ("customer_values", "profiles_customervalue", "customer_id"),
    ("ground_truth", "ingestion_customergroundtruth", "customer_id"),
)


def _now() -> str:
    return timezone.now().isoformat()


def _subject_customers(cursor, key: str) -> list[int]:
    """The subject's customer and every identity merged into it (an anonymous visitor it was)."""
    cursor.execute(
        "SELECT id FROM ingestion_customer WHERE key = %s"
        " UNION SELECT m.id FROM ingestion_customer m JOIN ingestion_customer c ON m.merged_into_id = c.id WHERE c.key = %s",
        [key, key],
    )
    return sorted(row[0] for row in cursor.fetchall())


def _identifiers(customer_ids: list[int], external_id: str) -> list[str]:
    """The strings that identify the subject in free text: the external id, email and phone."""
    found = {external_id}
    for email, phone in Customer.objects.filter(pk__in=customer_ids).values_list("email_encrypted", "phone_encrypted"):
        for encrypted in (email, phone):
            clear = pii_decrypt(encrypted) if encrypted else None
            if clear:
                found.add(clear)
    return sorted(found)


def _mentions(text: str, identifier: str) -> bool:
    """`identifier` in `text` as a whole token (an id "c1" does not match "c10")."""
    return re.search(rf"(?<![\w.@+-]){re.escape(identifier)}(?![\w@-])", text) is not None


def _quarantined_rows_delete(cursor, identifiers: list[str]) -> int:
    removed = 0
    for identifier in identifiers:
        pattern = "%" + identifier.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cursor.execute("SELECT id, raw FROM ingestion_quarantinedrow WHERE raw LIKE %s", [pattern])
        ids = [pk for pk, raw in cursor.fetchall() if _mentions(raw, identifier)]
        if ids:
            cursor.execute("DELETE FROM ingestion_quarantinedrow WHERE id = ANY(%s)", [ids])
            removed += cursor.rowcount
    return removed


def _database_erase(*, source: str, external_id: str, reason: str) -> tuple[dict, list[str], list[int]]:
    """Step 1 (one transaction). Returns per-store counts, the identifiers and the customer ids for
    the later steps."""
    key = customer_key(source=source, external_id=external_id)
    counts: dict[str, int] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        erasure_lock(cursor)
        SuppressedSubject.objects.get_or_create(
            token=suppression_token(source=source, external_id=external_id),
            defaults={"customer_token": customer_suppression_token(customer_key=key), "reason": reason},
        )
        ids = _subject_customers(cursor, key)
        identifiers = _identifiers(ids, external_id)
        counts["quarantined_rows"] = _quarantined_rows_delete(cursor, identifiers)
        cursor.execute(
            "DELETE FROM ingestion_socialedge WHERE source_customer_id = ANY(%s) OR target_customer_id = ANY(%s)", [ids, ids]
        )
        counts["social_edges"] = cursor.rowcount
        cursor.execute("DELETE FROM profiles_identitymerge WHERE merged_id = ANY(%s) OR survivor_id = ANY(%s)", [ids, ids])
        counts["identity_merges"] = cursor.rowcount
        for name, table, column in _CUSTOMER_TABLES:
            cursor.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s)", [ids])  # noqa: S608 (constant names)
            counts[name] = cursor.rowcount
        cursor.execute("UPDATE privacy_privacyrequest SET customer_id = NULL WHERE customer_id = ANY(%s)", [ids])
        cursor.execute("UPDATE ingestion_customer SET merged_into_id = NULL WHERE merged_into_id = ANY(%s)", [ids])
        cursor.execute("DELETE FROM ingestion_customer WHERE id = ANY(%s)", [ids])
        counts["customers"] = cursor.rowcount
    return counts, identifiers, ids


def _redis_erase(customer_ids: list[int]) -> int:
    """Pending-refresh markers name customers by id; nothing else in Redis names a subject (cache
    entries are aggregates, task messages carry only internal ids, which now name nobody)."""
    from profiles.services import refresh_pending_clear

    return refresh_pending_clear(customer_ids=customer_ids)


def _import_files_erase(identifiers: list[str]) -> int:
    """Uploaded import files still on disk that mention the subject are deleted (their jobs keep
    their counts; the file itself is the only copy of the raw rows)."""
    removed = 0
    root = Path(settings.MEDIA_ROOT).resolve()
    for job in ImportJob.objects.exclude(file_path="").only("pk", "file_path"):
        path = Path(job.file_path)
        if not path.is_file() or root not in path.resolve().parents:
            continue  # files outside the upload area (a server path given to the command) are the operator's
        if _file_mentions(path, identifiers):
            path.unlink()
            ImportJob.objects.filter(pk=job.pk).update(file_path="")
            removed += 1
    return removed


def _file_mentions(path: Path, identifiers: list[str], block: int = 8 << 20) -> bool:
    """Streamed: blocks overlap by the longest identifier, so a match across a boundary is seen."""
    overlap = max(len(i.encode()) for i in identifiers) + 2
    tail = b""
    with open(path, "rb") as handle:
        while piece := handle.read(block):
            window = tail + piece
            text = window.decode("utf-8", "replace")
            if any(i in text and _mentions(text, i) for i in identifiers):
                return True
            tail = window[-overlap:]
    return False


def _models_record(request: PrivacyRequest) -> dict:
    """The unlearning ledger: every version not yet retired was trained on data that included the
    subject (runs read every live customer). They must be retired within the deadline."""
    from training.models import ModelVersion

    versions = sorted(ModelVersion.objects.values_list("pk", flat=True))
    erased_at = timezone.now()
    ledger, _ = ErasureLedger.objects.get_or_create(
        request=request,
        defaults={"erased_at": erased_at, "model_versions": versions,
                  "retire_by": erased_at + timedelta(days=settings.PRIVACY_MODEL_RETIREMENT_DAYS)},
    )
    return {"model_versions_trained_on_subject": ledger.model_versions, "retire_by": ledger.retire_by.isoformat()}


def erasure_execute(*, request: PrivacyRequest, external_id: str) -> dict:
    """Erase the subject of `request` everywhere; returns the receipt (no personal data)."""
    receipt = {"suppression_token": request.subject_token, "stores": {}}
    counts, identifiers, ids = _database_erase(source=request.source, external_id=external_id,
                                               reason=f"erasure request #{request.pk}")
    at = _now()
    for name, count in counts.items():
        receipt["stores"][name] = {"removed": count, "at": at}
    receipt["stores"]["suppression_list"] = {"added": True, "at": at}
    receipt["stores"]["redis_keys"] = {"removed": _redis_erase(ids), "at": _now()}
    receipt["stores"]["import_files"] = {"removed": _import_files_erase(identifiers), "at": _now()}
    receipt["stores"]["training_snapshots"] = {
        "removed": 0, "at": _now(), "note": "training reads the store into memory; no snapshot is written to disk",
    }
    receipt["stores"]["vector_indexes"] = {
        "at": _now(),
        "note": "index entries of deleted rows are invisible to every query at once; VACUUM reclaims them",
    }
    receipt["models"] = _models_record(request)
    return receipt
