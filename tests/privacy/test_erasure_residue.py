"""After an erasure nothing names the subject in any store, encrypted ones included: an access
export written before the erasure, a rejected import row (encrypted), uploaded files, every
database column (ciphertext decrypted before it is searched), Redis (broker and cache databases)
and the in-process pseudonym cache."""

import inspect
import io
import zipfile
from pathlib import Path

import pytest
import redis
from cryptography.fernet import InvalidToken
from django.contrib.auth.models import Group
from django.db import connection

from config.celery import app as celery_app
from ingestion import pseudonyms
from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Customer
from ingestion.pseudonyms import customer_key, pii_decrypt_bytes
from ingestion.services import customers_upsert, events_ingest_batch
from privacy import services
from profiles.builds import profiles_build
from profiles.services import refresh_pending_mark

pytestmark = pytest.mark.django_db(transaction=True)  # imports write from worker threads
SUBJECT, EMAIL, PHONE = "subject-5c1d", "zhou.min.subject@example.com", "+86 138 0000 1111"


def _decrypted(data: bytes) -> bytes | None:
    """The plaintext when `data` is a Fernet token under the PII keys, else None."""
    try:
        return pii_decrypt_bytes(data)
    except (InvalidToken, ValueError, TypeError):
        return None


def _clear(data: bytes) -> bytes:
    """The bytes as stored, decrypted too when they are ciphertext, and a zip's members
    uncompressed (an access export is both)."""
    plain = _decrypted(data)
    found = data if plain is None else data + b"\n" + plain
    opened = plain if plain is not None else data
    if opened.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(opened)) as archive:
            found += b"".join(archive.read(name) for name in archive.namelist())
    return found


def _residue(needles: list[str], settings) -> list[str]:
    found = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                       "WHERE table_schema = 'public' AND data_type IN "
                       "('text', 'character varying', 'json', 'jsonb', 'bytea', 'ARRAY')")
        for table, column, data_type in cursor.fetchall():
            expression = f'"{column}"' if data_type == "bytea" else f'convert_to("{column}"::text, \'UTF8\')'
            cursor.execute(f'SELECT {expression} FROM "{table}" WHERE "{column}" IS NOT NULL')  # noqa: S608
            for (value,) in cursor.fetchall():
                text = _clear(bytes(value))
                found += [f"{table}.{column}: {n}" for n in needles if n.encode() in text]
    for url in {celery_app.conf.broker_url, settings.CACHES["default"]["LOCATION"]}:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter():
            values = [key] + ([client.get(key) or b""] if client.type(key) == b"string" else [])
            found += [f"redis {key!r}: {n}" for n in needles if any(n.encode() in v for v in values)]
    for path in Path(settings.MEDIA_ROOT).rglob("*"):
        if path.is_file():
            found += [f"{path}: {n}" for n in needles if n.encode() in _clear(path.read_bytes())]
    memoised = [name for name, function in vars(pseudonyms).items()
                if hasattr(function, "cache_info") and inspect.signature(function).parameters
                and function.cache_info().currsize]
    found += [f"in-process cache ingestion.pseudonyms.{name}" for name in memoised]
    return found


def test_erasure_leaves_no_trace_in_exports_quarantine_files_redis_or_caches(settings, tmp_path, django_user_model):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    officer = django_user_model.objects.create_user("cora", password="pw-for-tests-only", is_staff=True)
    officer.groups.add(Group.objects.get(name="Compliance"))
    officer = django_user_model.objects.get(pk=officer.pk)
    customers_upsert(rows=[{"external_id": SUBJECT, "email": EMAIL, "phone": PHONE, "name": "Zhou Min"}], source="default")
    events_ingest_batch(rows=[{"customer_id": c, "event_type": "purchase", "item_id": "sku-1", "value": "5.00",
                               "timestamp": f"2025-03-0{1 + i}T10:00:00Z", "context": {"note": "gift"}}
                              for i, c in enumerate((SUBJECT, "other-1", "other-2", SUBJECT))])
    upload = Path(settings.MEDIA_ROOT) / "imports" / "upload.csv"
    upload.parent.mkdir(parents=True)
    upload.write_text(f"customer_id,event_type,item_id,timestamp,note\nother-3,view,sku-1,2025-03-05T10:00:00Z,\n"
                      f"{SUBJECT},teleport,sku-1,2025-03-05T10:00:00Z,{PHONE}\n")
    assert import_job_run(job_id=import_job_create(path=upload, fmt="csv").pk).rows_rejected == 1
    profiles_build()
    subject = Customer.objects.get(key=customer_key(source="default", external_id=SUBJECT))
    refresh_pending_mark(customer_ids=[subject.pk])
    export = services.privacy_request_file(kind="access_export", source="default", external_id=SUBJECT, actor=officer)
    services.privacy_request_verify(request=export, actor=officer)
    services.privacy_request_execute(request=export, actor=officer)
    needles = [SUBJECT, EMAIL, PHONE, subject.key]
    before = _residue(needles, settings)
    assert any("exports" in place for place in before), "the scan must see the export before the erasure"
    assert any("ingestion_quarantinedrow" in place for place in before)

    erasure = services.privacy_request_file(kind="erasure", source="default", external_id=SUBJECT, actor=officer)
    services.privacy_request_verify(request=erasure, actor=officer)
    done = services.privacy_request_execute(request=erasure, actor=officer)

    assert _residue(needles, settings) == []
    stores = done.receipt["stores"]
    assert stores["exports"]["removed"] == 1 and stores["quarantined_rows"]["removed"] == 1
    assert stores["import_files"]["removed"] == 1 and stores["redis_keys"]["removed"] == 1
