"""The access export holds everything stored about the subject: events with their session and
context, the CRM forecast with audiences and risk, and the identity-merge history."""

import csv
import io
import json
import zipfile

import pytest
from django.contrib.auth.models import Group

from ingestion.services import customers_upsert, events_ingest_batch
from pipeline.flows import clv_refit
from privacy import services
from privacy.export import access_export_open
from profiles.merges import identify_call

pytestmark = pytest.mark.django_db
SUBJECT = "shopper-5"


@pytest.fixture
def shop(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    customers_upsert(rows=[{"external_id": SUBJECT, "email": "s5@example.com"}], source="default")
    rows = [{"customer_id": f"shopper-{c}", "event_type": "purchase", "item_id": f"sku-{w % 3}", "value": f"{10 + c}.00",
             "timestamp": f"2025-{1 + (w * 7 + c) // 28:02d}-{1 + (w * 7 + c) % 28:02d}T10:00:00Z",
             "session_id": f"s-{c}-{w}", "context": {"page": "checkout", "campaign": f"spring-{w}"}}
            for c in range(25) for w in range(0, 14, 1 + c % 3)]
    events_ingest_batch(rows=rows)
    events_ingest_batch(rows=[{"anonymous_id": "visitor-5", "event_type": "view", "item_id": "sku-1",
                               "timestamp": "2025-04-20T09:00:00Z"}])
    identify_call(source="default", anonymous_id="visitor-5", customer_id=SUBJECT)
    assert "fit" in clv_refit()


def test_access_export_has_event_context_session_forecast_audiences_risk_and_merges(shop, django_user_model):
    officer = django_user_model.objects.create_user("cora", password="pw-for-tests-only", is_staff=True)
    officer.groups.add(Group.objects.get(name="Compliance"))
    officer = django_user_model.objects.get(pk=officer.pk)
    request = services.privacy_request_file(kind="access_export", source="default", external_id=SUBJECT, actor=officer)
    services.privacy_request_verify(request=request, actor=officer)
    request = services.privacy_request_execute(request=request, actor=officer)

    archive = zipfile.ZipFile(io.BytesIO(access_export_open(request=request)))
    subject = json.loads(archive.read("subject.json"))
    events = list(csv.DictReader(io.StringIO(archive.read("events.csv").decode())))

    purchase = next(e for e in events if e["event_type"] == "purchase")
    assert purchase["session_id"].startswith("s-5-")
    assert json.loads(purchase["context"])["page"] == "checkout"
    prediction = subject["prediction"]
    assert prediction["expected_spend"] >= 0 and isinstance(prediction["audiences"], list)
    assert set(prediction["risk"]) == {"score", "band", "reasons"} and prediction["drivers"] is not None
    [merge] = subject["identity_merges"]
    assert merge["role"] == "survivor" and merge["method"] == "identify" and merge["events_moved"] == 1
