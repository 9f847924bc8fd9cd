"""What a training run reads from the event store: events at the same instant (MovieLens rates many
films in one second) come in one total order, (customer, time, arrival), the same in every read:
the order of the file's lines or of the API batch they came in (a database sequence numbers them as
they are written), not the order of their event ids (derived hashes), as the bench's stable sort
reads them (README "Deep user encoder")."""

import pytest

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Customer, Event, ImportStatus, Item
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


def _event_id_order(external_id: str) -> list[str]:
    customer = Customer.objects.get(key=customer_key(source="default", external_id=external_id))
    return list(Event.objects.filter(customer=customer, occurred_at__hour=10).order_by("event_id")
                .values_list("item__sku", flat=True))


def test_same_instant_events_from_an_api_batch_are_read_in_batch_order():
    _post("forward", SKUS)
    _post("backward", SKUS[::-1])
    # one of the two orders differs from the event ids' (hashes): the old (time, event id) read fails here
    assert _event_id_order("forward") != SKUS or _event_id_order("backward") != SKUS[::-1]

    seqs, vocabulary, _ = training_dataset_read()

    assert _read_skus(seqs, vocabulary, "forward") == ["film-z", *SKUS]  # time first: the earlier event leads
    assert _read_skus(seqs, vocabulary, "backward") == ["film-z", *SKUS[::-1]]
    again, vocabulary_again, _ = training_dataset_read()
    assert [a.tolist() for a in again.items] == [a.tolist() for a in seqs.items] and vocabulary_again == vocabulary


def test_same_instant_events_from_a_file_are_read_in_line_order_and_a_reimport_keeps_it(tmp_path):
    three = SKUS[:3]
    path = tmp_path / "ratings.csv"
    path.write_text(
        "customer_id,item_id,event_type,timestamp\n"
        + "".join(f"forward,{sku},view,2025-12-01T10:00:00Z\n" for sku in three)
        + "".join(f"backward,{sku},view,2025-12-01T10:00:00Z\n" for sku in three[::-1])
        + "forward,film-z,view,2025-12-01T09:00:00Z\nbackward,film-z,view,2025-12-01T09:00:00Z\n"
    )
    job = import_job_run(job_id=import_job_create(path=path, fmt="csv", options={}).pk)
    assert job.status == ImportStatus.SUCCEEDED and job.rows_inserted == 8
    assert _event_id_order("forward") != three or _event_id_order("backward") != three[::-1]

    seqs, vocabulary, _ = training_dataset_read()

    assert _read_skus(seqs, vocabulary, "forward") == ["film-z", *three]
    assert _read_skus(seqs, vocabulary, "backward") == ["film-z", *three[::-1]]
    # the same file again: every row is already stored, nothing is renumbered
    again = import_job_run(job_id=import_job_create(path=path, fmt="csv", options={}).pk)
    assert again.rows_inserted == 0
    reread, vocabulary_again, _ = training_dataset_read()
    assert [a.tolist() for a in reread.items] == [a.tolist() for a in seqs.items] and vocabulary_again == vocabulary


def test_the_read_works_under_debug_as_make_run_runs_it(settings):
    """DEBUG wraps cursors in Django's debug wrapper, whose COPY takes no parameters: `make run`'s
    worker (DEBUG=1) failed its training run on the first read."""
    settings.DEBUG = True
    _post("debugged", SKUS[:2])

    seqs, vocabulary, described = training_dataset_read()

    assert described["events"] == 3 and _read_skus(seqs, vocabulary, "debugged")[0] == "film-z"


def test_events_moved_to_another_customer_keep_their_arrival_order():
    """An identity merge moves events by UPDATE: the arrival numbers travel with them."""
    from ingestion.merging import customer_get_or_create, events_move

    _post("visitor", SKUS[::-1])
    visitor = Customer.objects.get(key=customer_key(source="default", external_id="visitor"))
    member = customer_get_or_create(source="default", external_id="member")

    moved = events_move(from_id=visitor.pk, to_id=member.pk)

    assert len(moved) == 6
    seqs, vocabulary, _ = training_dataset_read()
    assert _read_skus(seqs, vocabulary, "member") == ["film-z", *SKUS[::-1]]
