"""After an erasure nothing names the subject in any store, encrypted ones included: an access
export written before the erasure, a rejected import row (encrypted), uploaded files, every
database column (ciphertext decrypted before it is searched), Redis (broker and cache databases)
and the in-process pseudonym cache."""

from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Customer
from ingestion.pseudonyms import customer_key
from ingestion.services import customers_upsert, events_ingest_batch
from privacy import services
from profiles.builds import profiles_build
from profiles.services import refresh_pending_mark
from tests.privacy.residue import residue_found

pytestmark = pytest.mark.django_db(transaction=True)  # imports write from worker threads
SUBJECT, EMAIL, PHONE = "subject-5c1d", "zhou.min.subject@example.com", "+86 138 0000 1111"


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
    before = residue_found(needles, settings)
    assert any("exports" in place for place in before), "the scan must see the export before the erasure"
    assert any("ingestion_quarantinedrow" in place for place in before)

    erasure = services.privacy_request_file(kind="erasure", source="default", external_id=SUBJECT, actor=officer)
    services.privacy_request_verify(request=erasure, actor=officer)
    done = services.privacy_request_execute(request=erasure, actor=officer)

    assert residue_found(needles, settings) == []
    stores = done.receipt["stores"]
    assert stores["exports"]["removed"] == 1 and stores["quarantined_rows"]["removed"] == 1
    assert stores["import_files"]["removed"] == 1 and stores["redis_keys"]["removed"] == 1
