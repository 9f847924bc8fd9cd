"""What a training run reads from the event store: events at the same instant (MovieLens rates many
films in one second) come in one total order, (customer, time, event id), the same in every read
and whatever order they were written in, so a run, its resume, the gate and a re-encode all see the
same sequences. That order is the event ids' (derived hashes), not the order of the file or batch
they came in: the event table keeps no arrival order (README "Deep user encoder")."""

import pytest

from ingestion.models import Customer, Event, Item
from ingestion.pseudonyms import customer_key
from ingestion.services import events_ingest_batch
from training.services import training_dataset_read

pytestmark = pytest.mark.django_db(transaction=True)
SKUS = ["film-a", "film-b", "film-c", "film-d", "film-e"]


def _post(external_id: str, skus: list[str]) -> None:
    events_ingest_batch(source="default", rows=[
        {"customer_id": external_id, "event_type": "view", "item_id": sku, "timestamp": "2025-12-01T10:00:00Z"}
        for sku in skus
    ] + [{"customer_id": external_id, "event_type": "view", "item_id": "film-z", "timestamp": "2025-12-01T09:00:00Z"}])


def _read_skus(seqs, vocabulary, external_id: str) -> list[str]:
    customer = Customer.objects.get(key=customer_key(source="default", external_id=external_id)).pk
    row = list(seqs.customers).index(customer)
    sku_of = dict(Item.objects.values_list("pk", "sku"))
    return [sku_of[vocabulary[i - 1]] for i in seqs.items[row]]


def test_same_instant_events_are_read_in_event_id_order_whatever_order_they_were_written_in():
    _post("forward", SKUS)
    _post("backward", SKUS[::-1])

    seqs, vocabulary, _ = training_dataset_read()

    for external_id in ("forward", "backward"):
        read = _read_skus(seqs, vocabulary, external_id)
        customer = Customer.objects.get(key=customer_key(source="default", external_id=external_id))
        by_id = list(Event.objects.filter(customer=customer, occurred_at__hour=10).order_by("event_id")
                     .values_list("item__sku", flat=True))
        assert read[0] == "film-z"  # time first: the earlier event leads
        assert read[1:] == by_id and sorted(read[1:]) == SKUS
    again, vocabulary_again, _ = training_dataset_read()
    assert [a.tolist() for a in again.items] == [a.tolist() for a in seqs.items] and vocabulary_again == vocabulary


def test_the_read_works_under_debug_as_make_run_runs_it(settings):
    """DEBUG wraps cursors in Django's debug wrapper, whose COPY takes no parameters: `make run`'s
    worker (DEBUG=1) failed its training run on the first read."""
    settings.DEBUG = True
    _post("debugged", SKUS[:2])

    seqs, vocabulary, described = training_dataset_read()

    assert described["events"] == 3 and _read_skus(seqs, vocabulary, "debugged")[0] == "film-z"
