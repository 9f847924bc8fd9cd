"""Identity resolution: anonymous events, identify calls that merge a visitor into a customer, the
merge journal and exact undo, and the suppression list that no merge crosses."""

from datetime import UTC, datetime

import numpy as np
import pytest
from django.contrib.admin import AdminSite
from django.contrib.auth import get_user_model
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import RequestFactory

from ingestion.pseudonyms import customer_key
from ingestion.models import Customer, Event, SocialEdge, SocialRelation
from ingestion.services import events_ingest_batch
from privacy.models import SuppressedSubject
from privacy.services import subject_suppress
from profiles import merges
from profiles.models import IdentityMerge, MergeMethod, Profile
from profiles.builds import profiles_build

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events"
IDENTIFY = "/api/v1/identify"


def _history(n: int, day: int, **who) -> list[dict]:
    """n views and one purchase on one March day, by `customer_id=` or `anonymous_id=`."""
    return [
        {**who, "event_type": "view", "item_id": f"sku-{i % 5}", "timestamp": f"2025-03-{day:02d}T10:{i:02d}:00Z"}
        for i in range(n)
    ] + [{**who, "event_type": "purchase", "item_id": "sku-1", "value": "20.00", "timestamp": f"2025-03-{day:02d}T11:00:00Z"}]


def _known(external_id: str) -> Customer:
    return Customer.objects.get(key=customer_key(source="default", external_id=external_id))


def _anonymous(anonymous_id: str) -> Customer:
    return Customer.objects.get(key=customer_key(source="default:anonymous", external_id=anonymous_id))


def _event_ids(customer: Customer) -> set:
    return set(Event.objects.filter(customer=customer).values_list("event_id", flat=True))


def _profile_row(customer: Customer) -> dict:
    """Every column of the stored profile, vectors as lists (compared exactly)."""
    profile = Profile.objects.get(pk=customer.pk)
    row = {}
    for field in Profile._meta.concrete_fields:
        value = getattr(profile, field.attname)
        row[field.attname] = value.tolist() if isinstance(value, np.ndarray) else value
    return row


@pytest.fixture
def visitor_and_customer():
    """An anonymous visitor with 4 events and a known customer with 3, no feature set."""
    events_ingest_batch(rows=_history(3, 5, anonymous_id="visitor-1") + _history(2, 6, customer_id="alice"))
    return _anonymous("visitor-1"), _known("alice")


# --- anonymous events ----------------------------------------------------------------------------


def test_anonymous_events_are_stored_under_the_anonymous_namespace_apart_from_a_known_id(events_client):
    rows = _history(2, 3, anonymous_id="shared-spelling") + _history(1, 4, customer_id="shared-spelling")

    response = events_client.post(EVENTS, {"events": rows}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["inserted"] == 5
    visitor, known = _anonymous("shared-spelling"), _known("shared-spelling")
    assert visitor.pk != known.pk
    assert (visitor.source, known.source) == ("default:anonymous", "default")
    assert Event.objects.filter(customer=visitor).count() == 3 and Event.objects.filter(customer=known).count() == 2


def test_batch_result_lists_the_customers_that_got_new_events():
    rows = _history(1, 3, anonymous_id="v") + _history(1, 3, customer_id="c")

    first = events_ingest_batch(rows=rows)
    retry = events_ingest_batch(rows=rows)

    assert first.customer_ids == sorted([_anonymous("v").pk, _known("c").pk])
    assert (retry.inserted, retry.duplicates, retry.customer_ids) == (0, 4, [])


def test_a_row_with_both_ids_or_neither_is_refused_by_index_and_nothing_is_stored(events_client):
    rows = _history(0, 3, customer_id="c")
    both = {**rows[0], "anonymous_id": "v"}
    neither = {k: v for k, v in rows[0].items() if k != "customer_id"}
    too_long = {**neither, "anonymous_id": "v" * 257}

    response = events_client.post(EVENTS, {"events": [rows[0], both, neither, too_long]}, format="json")

    assert response.status_code == 400
    assert response.json()["rows"] == [
        {"index": 1, "errors": {"anonymous_id": ["give customer_id or anonymous_id, not both"]}},
        {"index": 2, "errors": {"customer_id": ["required (or anonymous_id for a visitor not yet identified)"]}},
        {"index": 3, "errors": {"anonymous_id": ["longer than 256 characters"]}},
    ]
    assert Event.objects.count() == 0 and Customer.objects.count() == 0


# --- identify and the journal ---------------------------------------------------------------------


def test_identify_moves_the_visitors_events_and_journals_what_when_why_and_confidence(events_client, visitor_and_customer):
    visitor, alice = visitor_and_customer
    visitor_events, alice_events = _event_ids(visitor), _event_ids(alice)
    before = datetime.now(UTC)

    response = events_client.post(IDENTIFY, {"anonymous_id": "visitor-1", "customer_id": "alice"}, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body == {"merge_id": body["merge_id"], "customer_key": alice.key, "events_moved": 4}
    assert _event_ids(alice) == visitor_events | alice_events and not _event_ids(visitor)
    visitor.refresh_from_db()
    assert visitor.merged_into_id == alice.pk
    merge = IdentityMerge.objects.get(pk=body["merge_id"])
    assert (merge.merged_id, merge.survivor_id) == (visitor.pk, alice.pk)
    assert set(merge.moved_event_ids) == visitor_events
    assert (merge.method, merge.reason, merge.confidence) == (MergeMethod.IDENTIFY, "identify call", 1.0)
    assert before <= merge.created_at <= datetime.now(UTC)
    assert merge.undone_at is None


def test_events_for_an_identified_visitor_land_on_the_customer(events_client, visitor_and_customer):
    visitor, alice = visitor_and_customer
    assert events_client.post(IDENTIFY, {"anonymous_id": "visitor-1", "customer_id": "alice"}, format="json").status_code == 200

    result = events_ingest_batch(rows=_history(1, 9, anonymous_id="visitor-1"))

    assert result.inserted == 2 and result.customer_ids == [alice.pk]
    assert not _event_ids(visitor)
    assert Event.objects.filter(customer=alice, occurred_at__day=9).count() == 2


def test_identify_twice_with_the_same_pair_returns_the_same_merge(events_client, visitor_and_customer):
    pair = {"anonymous_id": "visitor-1", "customer_id": "alice"}

    first = events_client.post(IDENTIFY, pair, format="json")
    second = events_client.post(IDENTIFY, pair, format="json")

    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert IdentityMerge.objects.count() == 1


def test_identify_creates_a_customer_it_has_not_seen_yet(visitor_and_customer):
    merge = merges.identify_call(source="default", anonymous_id="visitor-1", customer_id="bob")

    assert merge.survivor == _known("bob")
    assert len(merge.moved_event_ids) == 4 and Event.objects.filter(customer=merge.survivor).count() == 4


@pytest.mark.django_db(transaction=True)  # several profile writes, each needs its own transaction's staging table
def test_merge_then_undo_restores_both_profiles_exactly():
    # Given a profiled shop with an anonymous visitor and the customer it turns out to be
    rows = [row for c in range(30) for row in _history(3 + c % 7, 1 + c % 20, customer_id=f"shopper-{c}")]
    rows += _history(6, 21, anonymous_id="visitor-1") + _history(2, 8, customer_id="alice")
    events_ingest_batch(rows=rows)
    profiles_build()
    visitor, alice = _anonymous("visitor-1"), _known("alice")
    visitor_before, alice_before = _profile_row(visitor), _profile_row(alice)

    # When the visitor is identified
    merge = merges.identify_call(source="default", anonymous_id="visitor-1", customer_id="alice")

    # then its profile is gone and alice's includes its events
    assert not Profile.objects.filter(pk=visitor.pk).exists()
    alice_merged = _profile_row(alice)
    assert alice_merged["events_included"] == alice_before["events_included"] + visitor_before["events_included"]
    assert alice_merged["fused"] != alice_before["fused"] and alice_merged["traits"] != alice_before["traits"]
    assert merge.profile_snapshots["merged"]["profile"]["events_included"] == visitor_before["events_included"]

    # and undoing it brings back both rows, every column
    merges.identity_merge_undo(merge=merge, reason="wrong person")

    assert _profile_row(visitor) == visitor_before
    assert _profile_row(alice) == alice_before
    visitor.refresh_from_db()
    assert visitor.merged_into_id is None
    assert _event_ids(visitor) == set(merge.moved_event_ids)
    merge.refresh_from_db()
    assert merge.undone_at is not None and merge.undo_reason == "wrong person"


@pytest.mark.django_db(transaction=True)
def test_undo_recomputes_a_profile_whose_customer_got_events_since_the_merge():
    rows = [row for c in range(30) for row in _history(3 + c % 7, 1 + c % 20, customer_id=f"shopper-{c}")]
    events_ingest_batch(rows=rows + _history(6, 21, anonymous_id="visitor-1") + _history(2, 8, customer_id="alice"))
    profiles_build()
    alice = _known("alice")
    alice_before = _profile_row(alice)
    merge = merges.identify_call(source="default", anonymous_id="visitor-1", customer_id="alice")

    events_ingest_batch(rows=[{"customer_id": "alice", "event_type": "search", "timestamp": "2025-03-22T09:00:00Z"}])
    merges.identity_merge_undo(merge=merge, reason="wrong person")

    alice_after = _profile_row(alice)
    assert alice_after["events_included"] == alice_before["events_included"] + 1
    assert alice_after["snapshot_at"] > alice_before["snapshot_at"]


def test_undoing_twice_is_refused(visitor_and_customer):
    merge = merges.identify_call(source="default", anonymous_id="visitor-1", customer_id="alice")
    merges.identity_merge_undo(merge=merge, reason="mistake")

    with pytest.raises(merges.IdentityMergeUndoRefused):
        merges.identity_merge_undo(merge=merge, reason="again")


def test_undo_is_refused_while_a_later_merge_builds_on_it(visitor_and_customer):
    visitor, alice = visitor_and_customer
    events_ingest_batch(rows=_history(1, 7, customer_id="alice-main"))
    first = merges.identify_call(source="default", anonymous_id="visitor-1", customer_id="alice")
    second = merges.identities_merge(
        merged=alice, survivor=_known("alice-main"), method=MergeMethod.MANUAL, reason="duplicate account", confidence=0.9
    )

    with pytest.raises(merges.IdentityMergeUndoRefused, match=f"#{second.pk}"):
        merges.identity_merge_undo(merge=first, reason="mistake")

    merges.identity_merge_undo(merge=second, reason="mistake")
    merges.identity_merge_undo(merge=first, reason="mistake")
    assert Event.objects.filter(customer=visitor).count() == 4 and Event.objects.filter(customer=alice).count() == 3


def test_social_edges_are_repointed_on_merge_and_restored_by_undo(visitor_and_customer):
    visitor, alice = visitor_and_customer
    events_ingest_batch(rows=_history(0, 2, customer_id="x") + _history(0, 2, customer_id="y"))
    x, y = _known("x"), _known("y")
    when = datetime(2025, 3, 1, tzinfo=UTC)
    SocialEdge.objects.create(source_customer=visitor, target_customer=x, relation=SocialRelation.FOLLOW, weight=2.0)
    SocialEdge.objects.create(source_customer=x, target_customer=visitor, relation=SocialRelation.REFERRAL, occurred_at=when)
    SocialEdge.objects.create(source_customer=visitor, target_customer=alice, relation=SocialRelation.FOLLOW)  # self-loop after
    SocialEdge.objects.create(source_customer=visitor, target_customer=y, relation=SocialRelation.SHARE, weight=3.0)
    SocialEdge.objects.create(source_customer=alice, target_customer=y, relation=SocialRelation.SHARE)  # the duplicate
    columns = ("id", "source_customer_id", "target_customer_id", "relation", "occurred_at", "weight")
    original = set(SocialEdge.objects.values_list(*columns))

    merge = merges.identify_call(source="default", anonymous_id="visitor-1", customer_id="alice")

    assert set(SocialEdge.objects.values_list("source_customer_id", "target_customer_id", "relation")) == {
        (alice.pk, x.pk, SocialRelation.FOLLOW), (x.pk, alice.pk, SocialRelation.REFERRAL), (alice.pk, y.pk, SocialRelation.SHARE),
    }
    assert len(merge.moved_edges["repointed"]) == 2 and len(merge.moved_edges["dropped"]) == 2

    merges.identity_merge_undo(merge=merge, reason="mistake")

    assert set(SocialEdge.objects.values_list(*columns)) == original


# --- suppression ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suppressed", ["anonymous", "known"])
def test_no_merge_crosses_a_suppressed_subject_and_the_refusal_names_nothing(events_client, suppressed):
    events_ingest_batch(rows=_history(3, 5, anonymous_id="visitor-1"))
    if suppressed == "anonymous":
        subject_suppress(source="default:anonymous", external_id="visitor-1", reason="objection to processing")
    else:
        subject_suppress(source="default", external_id="carol", reason="erasure request")
    events_before = set(Event.objects.values_list("event_id", "customer_id"))
    customers_before = Customer.objects.count()

    response = events_client.post(IDENTIFY, {"anonymous_id": "visitor-1", "customer_id": "carol"}, format="json")

    assert response.status_code == 409
    assert response.json() == {"error": "merge_refused", "detail": "identity cannot be merged"}
    assert not IdentityMerge.objects.exists()
    assert set(Event.objects.values_list("event_id", "customer_id")) == events_before
    assert Customer.objects.count() == customers_before  # carol was not even created
    assert _anonymous("visitor-1").merged_into_id is None


def test_merging_stored_customers_checks_suppression_by_their_keys(visitor_and_customer):
    visitor, alice = visitor_and_customer
    subject_suppress(source="default", external_id="alice", reason="objection")

    with pytest.raises(merges.IdentitySuppressed, match="^identity cannot be merged$"):
        merges.identities_merge(merged=visitor, survivor=alice, method=MergeMethod.MANUAL, reason="r", confidence=0.5)
    assert not IdentityMerge.objects.exists() and Event.objects.filter(customer=visitor).count() == 4


def test_suppressing_twice_keeps_one_entry_and_tokens_differ_from_customer_keys():
    first = subject_suppress(source="default", external_id="dave", reason="first")
    again = subject_suppress(source="default", external_id="dave", reason="second")

    assert first.pk == again.pk and SuppressedSubject.objects.get().reason == "first"
    assert first.token != customer_key(source="default", external_id="dave")


# --- API contract ---------------------------------------------------------------------------------


def test_identify_api_status_codes(events_client, make_api_client, visitor_and_customer):
    events_ingest_batch(rows=_history(1, 9, anonymous_id="visitor-2"))

    unknown = events_client.post(IDENTIFY, {"anonymous_id": "never-seen", "customer_id": "alice"}, format="json")
    missing = events_client.post(IDENTIFY, {"anonymous_id": "visitor-1"}, format="json")
    too_long = events_client.post(IDENTIFY, {"anonymous_id": "v" * 257, "customer_id": "alice"}, format="json")
    wrong_scope = make_api_client("profiles:read").post(IDENTIFY, {"anonymous_id": "visitor-1", "customer_id": "alice"}, format="json")
    merged = events_client.post(IDENTIFY, {"anonymous_id": "visitor-1", "customer_id": "alice"}, format="json")
    elsewhere = events_client.post(IDENTIFY, {"anonymous_id": "visitor-1", "customer_id": "bob"}, format="json")
    into_merged = events_client.post(IDENTIFY, {"anonymous_id": "visitor-2", "customer_id": "alice"}, format="json")

    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    assert missing.status_code == 400 and "customer_id" in missing.json()
    assert too_long.status_code == 400 and "anonymous_id" in too_long.json()
    assert wrong_scope.status_code == 403
    assert merged.status_code == 200
    assert elsewhere.status_code == 409 and elsewhere.json()["error"] == "already_merged"
    assert into_merged.status_code == 200  # alice is the survivor, not merged: a second device joins her
    assert Event.objects.filter(customer=_known("alice")).count() == 3 + 4 + 2


# --- admin ----------------------------------------------------------------------------------------


def test_admin_action_undoes_the_selected_merges(visitor_and_customer):
    from profiles.identity_admin import IdentityMergeAdmin

    visitor, _ = visitor_and_customer
    merge = merges.identify_call(source="default", anonymous_id="visitor-1", customer_id="alice")
    operator = get_user_model().objects.create_superuser("op", "op@example.com", "pw-for-tests-only")
    request = RequestFactory().post("/admin/profiles/identitymerge/")
    request.user = operator
    request.session = {}
    request._messages = FallbackStorage(request)
    model_admin = IdentityMergeAdmin(IdentityMerge, AdminSite())

    model_admin.undo_selected(request, IdentityMerge.objects.filter(pk=merge.pk))
    model_admin.undo_selected(request, IdentityMerge.objects.filter(pk=merge.pk))

    merge.refresh_from_db()
    assert merge.undone_at is not None and merge.undone_by == operator
    assert Event.objects.filter(customer=visitor).count() == 4
    assert [str(m) for m in request._messages] == [
        "1 merge undone.", f"Merge #{merge.pk} not undone: merge #{merge.pk} was undone already",
    ]
