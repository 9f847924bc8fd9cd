"""Generic file imports: mapping, every kind of bad row quarantined with its line, cleaning rules."""

import json

import pandas as pd
import pytest

from ingestion.importers.sources import SourceError
from ingestion.models import (
    Customer,
    Event,
    EventFlag,
    EventType,
    ImportStatus,
    Item,
    QuarantinedRow,
)
from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.pseudonyms import pii_decrypt

pytestmark = pytest.mark.django_db(transaction=True)

HEADER = "event_id,customer_id,item_id,event_type,timestamp,quantity,value,currency\n"


def run(path, fmt="csv", **options):
    return import_job_run(job_id=import_job_create(path=path, fmt=fmt, options=options).pk)


def quarantine(job):
    rows = {q.line_number: q for q in QuarantinedRow.objects.filter(job=job)}
    for q in rows.values():
        q.raw = pii_decrypt(q.raw_encrypted)  # stored encrypted (tests/privacy/test_quarantine_protection.py)
    return rows


def test_corrupted_line_is_quarantined_with_its_number_and_every_other_line_lands(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        HEADER
        + "e1,c1,sku-1,view,2025-03-01T10:00:00Z,,,\n"
        + "e2,c1,sku-1,purchase,2025-03-01T10:05:00Z,1,19.90,usd\n"
        + "e3,c2,sku-2,view,2025-03-01T\x00garbage\n"  # line 4: torn write
        + "e4,c2,sku-2,add_to_cart,2025-03-01T11:00:00+08:00,2,40,EUR\n"
    )

    job = run(path)

    assert job.status == ImportStatus.SUCCEEDED
    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (4, 3, 1)
    bad = quarantine(job)
    assert list(bad) == [4]
    assert "expected 8 fields, found 5" in bad[4].reason
    assert "garbage" in bad[4].raw
    assert Event.objects.count() == 3
    cart = Event.objects.get(event_type=EventType.ADD_TO_CART)
    assert cart.occurred_at.isoformat() == "2025-03-01T03:00:00+00:00"  # +08:00 normalised to UTC
    assert Event.objects.get(event_type=EventType.PURCHASE).currency == "USD"


def test_every_kind_of_invalid_row_is_quarantined_with_field_and_reason(tmp_path):
    path = tmp_path / "bad.csv"
    rows = [
        "ok,c1,sku-1,view,2025-03-01T10:00:00Z,,,",  # 2: fine
        "a,,sku-1,view,2025-03-01T10:00:00Z,,,",  # 3: no customer
        "b,c1,sku-1,teleport,2025-03-01T10:00:00Z,,,",  # 4: unknown type
        "c,c1,sku-1,view,yesterday-ish,,,",  # 5: bad timestamp
        "d,c1,sku-1,view,1970-01-01T00:00:00Z,,,",  # 6: out of range
        "e,c1,sku-1,purchase,2025-03-01T10:00:00Z,1,,",  # 7: purchase without value
        "f,c1,sku-1,purchase,2025-03-01T10:00:00Z,1,-5,USD",  # 8: negative value
        "g,c1,sku-1,purchase,2025-03-01T10:00:00Z,1,5,DOLLARS",  # 9: bad currency
        "h,c1,,view,2025-03-01T10:00:00Z,,,",  # 10: view without item
        "i,c1,sku-1,purchase,2025-03-01T10:00:00Z,1.5,5,USD",  # 11: fractional quantity
        "j,c1,sku-1,purchase,2025-03-01T10:00:00Z,0,5,USD",  # 12: zero quantity
        "k,c1,sku-1,purchase,2025-03-01T10:00:00Z,two,5,USD",  # 13: quantity not a number
        "l," + "x" * 300 + ",sku-1,view,2025-03-01T10:00:00Z,,,",  # 14: customer id too long
    ]
    path.write_text(HEADER + "\n".join(rows) + "\n")

    job = run(path)

    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (13, 1, 12)
    reasons = {line: q.reason for line, q in quarantine(job).items()}
    assert reasons == {
        3: "customer_id: required",
        4: "event_type: unknown type",
        5: "timestamp: not a valid date/time",
        6: "timestamp: outside 1990-01-01 .. tomorrow",
        7: "value: required for purchases and refunds",
        8: "value: must not be negative (use a refund event)",
        9: "currency: not an ISO 4217 code",
        10: "item_id: required for this event type",
        11: "quantity: not a whole number",
        12: "quantity: must be between 1 and 1,000,000",
        13: "quantity: not a number",
        14: "customer_id: longer than 256 characters",
    }
    assert quarantine(job)[9].raw == "g,c1,sku-1,purchase,2025-03-01T10:00:00Z,1,5,DOLLARS"
    assert job.report["rejected: currency not an ISO 4217 code"] == 1


def test_column_mapping_constants_and_source_time_zone(tmp_path):
    path = tmp_path / "shop.csv"
    path.write_text("user;sku;when;amount\nu1;A;2025-07-01 09:00:00;12.5\nu2;B;2025-07-01 09:30:00;7\n")

    job = run(path, mapping={"customer_id": "user", "item_id": "sku", "timestamp": "when", "value": "amount"},
              constants={"event_type": "purchase"}, delimiter=";", timezone="Asia/Shanghai", default_currency="CNY")

    assert (job.rows_inserted, job.rows_rejected) == (2, 0)
    first = Event.objects.get(item__sku="A")
    assert first.occurred_at.isoformat() == "2025-07-01T01:00:00+00:00"
    assert (first.currency, float(first.value), first.event_type) == ("CNY", 12.5, EventType.PURCHASE)
    assert job.report["timestamp_localised_to_utc"] == 2
    assert Item.objects.filter(sku__in=["A", "B"]).count() == 2  # unknown SKUs become catalogue stubs


def test_mapping_to_a_column_the_file_lacks_fails_before_writing(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    job = import_job_create(path=path, fmt="csv", options={"mapping": {"customer_id": "user"}})

    with pytest.raises(SourceError, match="mapped column"):
        import_job_run(job_id=job.pk)

    job.refresh_from_db()
    assert job.status == ImportStatus.FAILED and "user" in job.error
    assert Event.objects.count() == 0


def test_near_duplicate_views_are_removed_but_identical_purchases_without_order_id_are_kept(tmp_path):
    path = tmp_path / "noise.csv"
    path.write_text(
        "customer_id,item_id,event_type,timestamp,value,order_id\n"
        "c1,A,view,2025-01-01T10:00:00Z,,\n"
        "c1,A,view,2025-01-01T10:00:03Z,,\n"  # reload within 5 s: noise
        "c1,A,view,2025-01-01T10:01:00Z,,\n"  # a minute later: behaviour
        "c1,A,purchase,2025-01-01T10:02:00Z,10,\n"
        "c1,A,purchase,2025-01-01T10:02:00Z,10,\n"  # identical, no order id: a second purchase
        "c1,B,purchase,2025-01-01T10:03:00Z,5,o-9\n"
        "c1,B,purchase,2025-01-01T10:03:30Z,5,o-9\n"  # same order line twice: merged
    )

    job = run(path)

    assert (job.rows_read, job.rows_inserted, job.rows_removed) == (7, 5, 2)
    assert Event.objects.filter(event_type=EventType.VIEW).count() == 2
    assert Event.objects.filter(event_type=EventType.PURCHASE, item__sku="A").count() == 2
    assert Event.objects.filter(order_id="o-9").count() == 1
    assert job.report["near_duplicate_removed"] == 1 and job.report["order_line_repeat_removed"] == 1


def test_bot_rate_and_impossible_price_are_flagged_not_dropped(tmp_path):
    path = tmp_path / "bot.csv"
    lines = [f"bot,I{i},click,2025-01-01T10:00:{i % 60:02d}Z,," for i in range(70)]
    lines.append("human,X,purchase,2025-01-01T10:00:00Z,1,2500000")
    path.write_text("customer_id,item_id,event_type,timestamp,quantity,value\n" + "\n".join(lines) + "\n")

    job = run(path)

    assert job.rows_inserted == 71 and job.rows_flagged == 71
    assert Event.objects.filter(flags=EventFlag.BOT_RATE).count() == 70
    assert Event.objects.get(customer__in=Customer.objects.filter(events__item__sku="X")).flags == EventFlag.PRICE_OUTLIER


def test_jsonl_with_a_broken_line_and_a_non_object_context(tmp_path):
    path = tmp_path / "events.jsonl"
    good = {"event_id": "j1", "customer_id": 7, "event_type": "search", "timestamp": "2025-02-02T02:02:02Z",
            "context": {"query": "红茶"}}
    path.write_text(
        json.dumps(good, ensure_ascii=False) + "\n"
        + '{"event_id": "j2", "customer_id": 7,\n'
        + json.dumps({**good, "event_id": "j3", "context": [1, 2]}) + "\n"
        + "\n"
        + "[1, 2]\n"
    )

    job = run(path, fmt="jsonl")

    assert (job.rows_inserted, job.rows_rejected) == (1, 3)
    reasons = {line: q.reason for line, q in quarantine(job).items()}
    assert reasons[2].startswith("row: invalid JSON")
    assert reasons[3] == "context: not a JSON object"
    assert reasons[5] == "row: not a JSON object"
    assert job.report["blank_line_skipped"] == 1
    assert Event.objects.get().context == {"query": "红茶"}


def test_parquet_with_row_numbers(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({
        "customer_id": ["a", "b", None],
        "event_type": ["view", "view", "view"],
        "item_id": ["X", "Y", "Z"],
        "timestamp": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-03"], utc=True).astype(str),
    }).to_parquet(path)

    job = run(path, fmt="parquet")

    assert (job.rows_inserted, job.rows_rejected) == (2, 1)
    assert list(quarantine(job)) == [3]


def test_reimport_of_an_appended_ledger_adds_only_the_new_lines(tmp_path):
    # a ledger's identity is its first 64 KiB, so the file must be longer than that
    path = tmp_path / "ledger.csv"
    body = "customer_id,event_type,timestamp,value\n" + "".join(
        f"c{i},purchase,2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z,1\n" for i in range(3000)
    )
    assert len(body) > 65536
    path.write_text(body)
    assert run(path).rows_inserted == 3000

    path.write_text(body + "c99,purchase,2025-01-02T00:00:00Z,3\n")
    again = run(path)

    assert (again.rows_inserted, again.rows_duplicate) == (1, 3000)


def test_a_line_that_is_not_utf8_is_quarantined_and_the_rest_land(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b"customer_id,item_id,event_type,timestamp\n"
        b"c1,A,view,2025-01-01T10:00:00Z\n"
        + "c2,茶,view,2025-01-01T10:01:00Z\n".encode("gbk")  # a GBK line in a UTF-8 file
        + "c3,茶,view,2025-01-01T10:02:00Z\n".encode("utf-8")
    )

    job = run(path)

    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (3, 2, 1)
    bad = quarantine(job)[3]
    assert bad.reason == "row: not valid UTF-8" and bad.raw.startswith("c2,")
    assert Item.objects.filter(sku="茶").exists()


def test_jsonl_and_cdnow_lines_that_are_not_utf8_are_quarantined(tmp_path):
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_bytes(b'{"customer_id": "a", "event_type": "search", "timestamp": "2025-01-01T00:00:00Z"}\n'
                      + '{"customer_id": "茶"}\n'.encode("gbk"))
    cdnow = tmp_path / "cdnow.txt"
    cdnow.write_bytes(b" 00001 19970101  1   11.77\n \xff\xfe 19970102  1   1.00\n")

    jsonl_job = run(jsonl, fmt="jsonl")
    cdnow_job = import_job_run(job_id=import_job_create(path=cdnow, fmt="cdnow").pk)

    assert (jsonl_job.rows_inserted, jsonl_job.rows_rejected) == (1, 1)
    assert (cdnow_job.rows_inserted, cdnow_job.rows_rejected) == (1, 1)
    assert quarantine(cdnow_job)[2].reason == "row: not valid UTF-8"


def test_command_reads_a_mapping_file_and_refuses_unknown_fields(tmp_path):
    from django.core.management import CommandError, call_command

    data = tmp_path / "orders.csv"
    data.write_text("buyer,when,total\nb1,2025-06-01T08:00:00Z,30\n")
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"mapping": {"customer_id": "buyer", "timestamp": "when", "value": "total"},
                                   "constants": {"event_type": "purchase"}}))

    call_command("import_events", str(data), "--format", "csv", "--mapping-file", str(mapping))

    assert float(Event.objects.get(customer__in=Customer.objects.all()).value) == 30.0
    with pytest.raises(CommandError, match="FIELD one of"):
        call_command("import_events", str(data), "--format", "csv", "--map", "buyer_name=buyer")
