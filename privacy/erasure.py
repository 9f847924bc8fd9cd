"""Erasure of one data subject from every store, with a receipt.

Order matters:
1. One transaction holds the ingest lock exclusively (writers of subject data hold it shared and
   check the suppression list inside their transaction), puts the subject on the suppression list
   and deletes every row that names them. A writer that was running has finished before the
   deletes; one that starts later sees the suppression and refuses the rows. So nothing the
   subject sends while being erased survives.
2. Outside the database: pending-refresh keys in Redis, retained import files that contain the
   subject's id, and the subject's access exports are removed.
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

from django.apps import apps

from config.db_router import replica_reads_fenced

from crm import services as crm_services
from ingestion import services as ingestion_services
from ingestion.import_jobs import import_files_erase
from ingestion.models import Customer
from ingestion.pseudonyms import customer_keys, pii_decrypt
from ingestion.selectors import customer_key_resolve, subject_customer_ids
from profiles import services as profile_services
from profiles.memory_search import memory_snapshots_scrub
from segments import services as segment_services
from privacy.suppression_tokens import (
    customer_suppression_token, customer_suppression_tokens, suppression_key_id, suppression_token, suppression_tokens,
)
from privacy.models import ErasureLedger, PrivacyRequest, SuppressedSubject
from privacy.selectors import suppressed_subject_get
from privacy.export import subject_exports_erase
from privacy.guard import erasure_lock

# Which erase service removes the rows of each relation to Customer: each app declares the
# relations of its own models (CUSTOMER_RELATIONS_ERASED in its services), privacy its own here.
# A relation to Customer in no list and not exempted stops every erasure (and fails
# tests/privacy/test_erasure_coverage.py), so a new customer-keyed table cannot be missed silently.
_APP_ERASE_SERVICES = (ingestion_services, profile_services, segment_services, crm_services)
PRIVACY_RELATIONS_ERASED = {"privacy.PrivacyRequest.customer": "_database_erase (set to NULL)"}
CUSTOMER_RELATIONS_EXEMPT: dict[str, str] = {}  # "app.Model.field": why its rows may stay

# Stores that hold subject data without a relation to Customer; each is a key of the receipt.
NON_RELATIONAL_STORES = {
    "quarantined_rows": "rejected import rows, matched by the subject's token or identifiers",
    "redis_keys": "pending-refresh markers that name the subject's customers",
    "import_files": "uploaded import files that mention an identifier",
    "exports": "access export files of the subject (decrypted personal data and every event)",
    "pseudonym_cache": "no process keeps external ids: customer keys are computed per call",
    "training_snapshots": "training reads the store into memory; nothing is written per customer",
    "similarity_snapshots": "in-memory similarity graphs and their snapshot files: vectors overwritten, ids dropped",
}


class ErasureCoverageError(RuntimeError):
    """A model relates to Customer but no erase service covers it and no exemption names it."""


def customer_relations(models=None) -> list[str]:
    """"app_label.Model.field" for every concrete relation to ingestion.Customer."""
    found = []
    for model in models if models is not None else apps.get_models():
        for field in model._meta.get_fields():
            if field.is_relation and field.concrete and field.related_model is Customer:
                found.append(f"{model._meta.label}.{field.name}")
    return sorted(found)


def customer_relations_covered() -> dict[str, str]:
    """Relation → the service that erases it, or the reason it is exempt."""
    covered = dict(PRIVACY_RELATIONS_ERASED)
    for module in _APP_ERASE_SERVICES:
        covered.update(module.CUSTOMER_RELATIONS_ERASED)
    return {**covered, **{relation: f"exempt: {why}" for relation, why in CUSTOMER_RELATIONS_EXEMPT.items()}}


def customer_relations_uncovered(models=None) -> list[str]:
    covered = customer_relations_covered()
    return [relation for relation in customer_relations(models) if relation not in covered]


def _now() -> str:
    return timezone.now().isoformat()


def _identifiers(customer_ids: list[int], external_id: str | None) -> list[str]:
    """The strings that identify the subject in free text: the external id (when known), email and phone."""
    found = {external_id} if external_id else set()
    for email, phone in Customer.objects.filter(pk__in=customer_ids).values_list("email_encrypted", "phone_encrypted"):
        for encrypted in (email, phone):
            clear = pii_decrypt(encrypted) if encrypted else None
            if clear:
                found.add(clear)
    return sorted(found)


def _mentions(text: str, identifier: str) -> bool:
    """`identifier` in `text` as a whole token (an id "c1" does not match "c10")."""
    return re.search(rf"(?<![\w.@+-]){re.escape(identifier)}(?![\w@-])", text) is not None


def _database_erase(*, source: str, external_id: str, reason: str) -> tuple[dict, list[str], list[int]]:
    """Step 1 (one transaction). Returns per-store counts, the identifiers and the customer ids for
    the later steps."""
    # the subject's pseudonym under every key of the ring: its customer may predate a rotation
    subject_keys = customer_keys(source=source, external_id=external_id)
    # replicas answer no read from its start, and afterwards only once they have replayed its commit
    with replica_reads_fenced(), transaction.atomic(), connection.cursor() as cursor:
        erasure_lock(cursor)
        if suppressed_subject_get(source=source, external_id=external_id) is None:
            SuppressedSubject.objects.get_or_create(
                token=suppression_token(source=source, external_id=external_id),
                defaults={"customer_token": customer_suppression_token(
                    customer_key=customer_key_resolve(source=source, external_id=external_id)),
                    "key_id": suppression_key_id(), "reason": reason},
            )
        ids = subject_customer_ids(keys=subject_keys)
        identifiers = _identifiers(ids, external_id)
        # the subject and every identity merged into it (a row may name an anonymous visitor), each
        # customer token under every suppression key (a quarantined row keeps the token it was made with)
        keys = {*subject_keys, *Customer.objects.filter(pk__in=ids).values_list("key", flat=True)}
        tokens = sorted(t for k in keys for t in customer_suppression_tokens(customer_key=k))
        # written ahead of the commit: an entry whose erasure then failed is an erasure still owed
        # (its request is retried), while a lost entry would let a restored backup bring the subject back
        journal_append({"source": source, "token": suppression_token(source=source, external_id=external_id),
                        "key_id": suppression_key_id(), "customer_tokens": tokens, "reason": reason})
        counts = _customers_rows_erase(ids=ids, identifiers=identifiers, customer_tokens=tokens)
    return counts, identifiers, ids


# --- The erasure journal: what a restored backup must forget again ------------------------------


def journal_append(entry: dict) -> None:
    """One line per erasure in ERASURE_JOURNAL_PATH, a file kept apart from the database (and its
    backups): keyed tokens only, no identifier. Flushed to disk before the erasure commits."""
    import json
    import os

    path = Path(settings.ERASURE_JOURNAL_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"erased_at": _now(), **entry}, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as journal:
        journal.write(line)
        journal.flush()
        os.fsync(journal.fileno())


def journal_entries() -> list[dict]:
    import json

    path = Path(settings.ERASURE_JOURNAL_PATH)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def erasure_journal_replay() -> dict:
    """After a restore: erase again every subject the journal names that the restored store still
    holds, and put each back on the suppression list. Customers are found by their customer tokens
    (under every suppression key), since the journal holds no external id. Idempotent."""
    entries = journal_entries()
    if not entries:
        return {"entries": 0, "subjects_erased_again": 0, "customers_removed": 0}
    wanted: dict[str, dict] = {}
    for entry in entries:
        for token in entry["customer_tokens"]:
            wanted[token] = entry
    again, removed = set(), 0
    with replica_reads_fenced(), transaction.atomic(), connection.cursor() as cursor:
        erasure_lock(cursor)
        for entry in entries:
            if not SuppressedSubject.objects.filter(token=entry["token"]).exists():
                SuppressedSubject.objects.create(
                    token=entry["token"], customer_token=entry["customer_tokens"][0] if entry["customer_tokens"] else "",
                    key_id=entry["key_id"], reason=f"{entry['reason']} (replayed from the erasure journal)")
        matched = [pk for pk, key in Customer.objects.values_list("pk", "key").iterator(chunk_size=20_000)
                   if any(t in wanted for t in customer_suppression_tokens(customer_key=key))]
        if matched:
            ids = sorted({*matched, *Customer.objects.filter(merged_into_id__in=matched).values_list("pk", flat=True)})
            keys = Customer.objects.filter(pk__in=ids).values_list("key", flat=True)
            tokens = sorted(t for k in keys for t in customer_suppression_tokens(customer_key=k))
            identifiers = _identifiers(ids, external_id=None)
            again = {wanted[t]["token"] for t in tokens if t in wanted}
            removed = _customers_rows_erase(ids=ids, identifiers=identifiers, customer_tokens=tokens)["customers"]
    return {"entries": len(entries), "subjects_erased_again": len(again), "customers_removed": removed}


def _customers_rows_erase(*, ids: list[int], identifiers: list[str], customer_tokens: list[str]) -> dict:
    """Every row that names these customers, app by app, the customers themselves last. Inside the
    caller's transaction, under the erasure lock."""
    counts = {"quarantined_rows": ingestion_services.quarantined_rows_erase(
        subject_tokens=customer_tokens, identifiers=identifiers, mentions=_mentions)}
    counts["social_edges"] = ingestion_services.social_edges_erase(customer_ids=ids)
    profile_counts = profile_services.customer_profiles_erase(customer_ids=ids)
    counts["identity_merges"] = profile_counts.pop("identity_merges")
    counts["segment_memberships"] = segment_services.customer_memberships_erase(customer_ids=ids)
    counts["predictions"] = crm_services.customer_predictions_erase(customer_ids=ids)
    counts.update(profile_counts)
    PrivacyRequest.objects.filter(customer_id__in=ids).update(customer=None)
    counts.update(ingestion_services.customers_erase(customer_ids=ids))
    return counts


def _redis_erase(customer_ids: list[int]) -> int:
    """Pending-refresh markers name customers by id; nothing else in Redis names a subject (cache
    entries are aggregates, task messages carry only internal ids, which now name nobody)."""
    from profiles.services import refresh_pending_clear

    return refresh_pending_clear(customer_ids=customer_ids)


def _import_files_erase(identifiers: list[str]) -> int:
    """Uploaded import files still on disk that mention the subject are deleted."""
    return import_files_erase(matches=lambda path: _file_mentions(path, identifiers))


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
    if uncovered := customer_relations_uncovered():
        raise ErasureCoverageError(f"no erase service covers {', '.join(uncovered)}")
    receipt = {"suppression_token": request.subject_token, "stores": {}}
    counts, identifiers, ids = _database_erase(source=request.source, external_id=external_id,
                                               reason=f"erasure request #{request.pk}")
    at = _now()
    for name, count in counts.items():
        receipt["stores"][name] = {"removed": count, "at": at}
    receipt["stores"]["suppression_list"] = {"added": True, "at": at}
    receipt["stores"]["redis_keys"] = {"removed": _redis_erase(ids), "at": _now()}
    receipt["stores"]["import_files"] = {"removed": _import_files_erase(identifiers), "at": _now()}
    receipt["stores"]["exports"] = {"removed": subject_exports_erase(
        subject_tokens=sorted({request.subject_token, *suppression_tokens(source=request.source, external_id=external_id)})), "at": _now()}
    receipt["stores"]["similarity_snapshots"] = {"removed": memory_snapshots_scrub(customer_ids=ids), "at": _now()}
    for store in ("pseudonym_cache", "training_snapshots"):
        receipt["stores"][store] = {"removed": 0, "at": _now(), "note": NON_RELATIONAL_STORES[store]}
    receipt["stores"]["vector_indexes"] = {
        "at": _now(),
        "note": "index entries of deleted rows are invisible to every query at once; VACUUM reclaims them",
    }
    receipt["models"] = _models_record(request)
    return receipt
