"""How an import writes its chunks (README "Bulk import"): a binary COPY straight into the event
table while none of the chunk's events is stored yet, the staging merge (INSERT … ON CONFLICT DO
NOTHING) once one is — with the same rows, counts and values either way."""

import uuid
from decimal import Decimal

import pytest

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Event, ImportChunk, ImportStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def small_chunks(settings):
    settings.INGEST_CSV_BLOCK_BYTES = 16 * 1024  # about 160 lines a chunk

HEADER = "event_id,customer_id,item_id,event_type,timestamp,quantity,value,currency\n"


def run(path):
    return import_job_run(job_id=import_job_create(path=path, fmt="csv").pk)


def chunks(job) -> int:
    return ImportChunk.objects.filter(job=job).count()


def ledger(lines: int) -> str:
    return HEADER + "".join(
        f"{uuid.UUID(int=i + 1)},c{i % 7},sku-{i % 5},purchase,2025-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z,1,{i % 90 + 1}.25,EUR\n"
        for i in range(lines)
    )


def stored_rows():
    return sorted(Event.objects.values_list("customer_id", "event_id", "item_id", "occurred_at", "value", "arrival"))


def test_a_fresh_file_is_copied_and_its_reimport_merged_with_nothing_added(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(ledger(900))

    first = run(path)
    rows = stored_rows()
    again = run(path)

    assert first.status == again.status == ImportStatus.SUCCEEDED
    assert (first.rows_inserted, first.rows_duplicate) == (900, 0)
    assert chunks(first) == chunks(again) > 3
    assert (first.report["chunks_copied"], first.report.get("chunks_merged", 0)) == (chunks(first), 0)
    # the re-import's first chunk meets stored events, so it and the rest are merged
    assert (again.rows_inserted, again.rows_duplicate, again.report["duplicate_already_stored"]) == (0, 900, 900)
    assert (again.report.get("chunks_copied", 0), again.report["chunks_merged"]) == (0, chunks(again))
    assert stored_rows() == rows


def test_an_event_repeated_in_a_later_chunk_is_stored_once(tmp_path):
    """The copy of the later chunk fails on the stored event and is rolled back whole: that chunk is
    merged instead, and every other event of it is still stored."""
    body = ledger(600)
    repeated = body.splitlines()[1]  # line 2, in the first chunk
    path = tmp_path / "events.csv"
    path.write_text(body + repeated + "\n")

    job = run(path)

    assert (job.rows_read, job.rows_inserted, job.rows_duplicate) == (601, 600, 1)
    # the chunk with the repeat, and every later one, is merged; the ones before it copied
    assert job.report["chunks_merged"] >= 1 and job.report["chunks_copied"] >= 3
    assert job.report["chunks_copied"] + job.report["chunks_merged"] == chunks(job)
    assert Event.objects.count() == 600
    assert Event.objects.filter(event_id=uuid.UUID(int=1)).count() == 1


def test_copied_values_are_those_the_text_path_stores(tmp_path):
    """Amounts as cleaning rounded them (to cents, as floats), exactly; client UUIDs kept; a missing
    value stays NULL; file order kept in arrival although rows are written in key order."""
    path = tmp_path / "events.csv"
    ids = [uuid.UUID(int=n) for n in (9, 3, 7, 1, 5)]
    path.write_text(
        HEADER
        + f"{ids[0]},c1,sku-1,purchase,2025-03-01T10:00:00Z,1,2.675,EUR\n"
        + f"{ids[1]},c1,sku-1,purchase,2025-03-01T10:00:00Z,1,19.995,EUR\n"
        + f"{ids[2]},c1,sku-1,refund,2025-03-01T10:00:00Z,1,1.005,EUR\n"
        + f"{ids[3]},c1,sku-1,purchase,2025-03-01T10:00:00Z,3,12.3,EUR\n"
        + f"{ids[4]},c1,sku-1,view,2025-03-01T10:00:00Z,,,\n"
    )

    job = run(path)

    assert job.rows_inserted == 5 and job.report["chunks_copied"] == 1
    by_id = {e.event_id: e for e in Event.objects.all()}
    assert [by_id[i].value for i in ids] == [Decimal("2.68"), Decimal("20.00"), Decimal("1.00"), Decimal("12.30"), None]
    assert [by_id[i].quantity for i in ids] == [1, 1, 1, 3, 1]
    arrivals = [by_id[i].arrival for i in ids]
    assert arrivals == sorted(arrivals)  # line order, not event-id order


def test_amounts_with_more_than_two_decimals_round_as_postgresql_rounds_their_text():
    """The binary payload's numeric column (the API and file paths round to cents before it, so
    this is its own guarantee): half away from zero on the decimal text, though the binary float of
    2.675 is 2.67499…, as a text COPY of the same numbers would store them."""
    import pandas as pd

    from ingestion.bulk import amounts_numeric

    amounts = amounts_numeric(pd.Series([2.675, 19.995, 1.005, -1.005, 12.3, None, 999_999_999_999.99]))

    assert amounts.to_pylist() == [Decimal("2.68"), Decimal("20.00"), Decimal("1.01"), Decimal("-1.01"),
                                   Decimal("12.30"), None, Decimal("999999999999.99")]


def test_a_copy_that_meets_a_stored_event_with_citus_error_code_is_merged(tmp_path):
    """On a Citus cluster a shard's duplicate key reaches the COPY as SQLSTATE XX000 (Citus passes
    the message on, not the code; seen on Citus 14.0.1, README "Citus"). A trigger raises exactly
    that for a COPY meeting a stored event, so a re-import must merge, as on one server."""
    from django.db import connection

    path = tmp_path / "events.csv"
    path.write_text(ledger(600))
    first = run(path)
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION test_citus_like_duplicate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF current_query() ILIKE 'COPY ingestion_event %' AND EXISTS (
                    SELECT 1 FROM ingestion_event WHERE customer_id = NEW.customer_id AND event_id = NEW.event_id) THEN
                    RAISE EXCEPTION 'duplicate key value violates unique constraint "ingestion_event_p0_pkey_102008"'
                        USING ERRCODE = 'XX000';
                END IF;
                RETURN NEW;
            END $$""")
        cursor.execute("CREATE TRIGGER test_citus_like_duplicate BEFORE INSERT ON ingestion_event "
                       "FOR EACH ROW EXECUTE FUNCTION test_citus_like_duplicate()")
    try:
        again = run(path)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_citus_like_duplicate ON ingestion_event")
            cursor.execute("DROP FUNCTION test_citus_like_duplicate()")

    assert again.status == ImportStatus.SUCCEEDED, again.error
    assert (first.rows_inserted, again.rows_inserted, again.rows_duplicate) == (600, 0, 600)
    assert again.report["chunks_merged"] == chunks(again) and Event.objects.count() == 600
