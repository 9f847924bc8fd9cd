"""Customers, items and social edges from files: validated like the API, bad rows quarantined."""

import pytest
from django.core.management import call_command

from ingestion.pseudonyms import customer_key, pii_decrypt
from ingestion.models import Customer, ImportStatus, Item, QuarantinedRow, SocialEdge
from ingestion.import_jobs import import_job_create, import_job_run

pytestmark = pytest.mark.django_db(transaction=True)


def run(path, fmt="csv", **options):
    return import_job_run(job_id=import_job_create(path=path, fmt=fmt, options=options).pk)


def test_customer_file_with_renamed_columns_encrypts_pii_and_quarantines_bad_rows(tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text(
        "id,mail,age,gender,signup_date,attributes\n"
        'A1,zhang.wei@example.com,34,male,2024-03-01,"{""tier"": ""gold""}"\n'
        "A2,not-an-email,250,robot,2024-13-01,\n"
        "A3,,,,,\n"
    )

    job = run(path, kind="customers", mapping={"external_id": "id", "email": "mail"})

    assert job.status == ImportStatus.SUCCEEDED
    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (3, 2, 1)
    a1 = Customer.objects.get(key=customer_key(source="default", external_id="A1"))
    assert (a1.age, a1.gender, str(a1.signup_date), a1.attributes) == (34, "male", "2024-03-01", {"tier": "gold"})
    assert pii_decrypt(a1.email_encrypted) == "zhang.wei@example.com"
    bad = QuarantinedRow.objects.get(job=job)
    assert bad.line_number == 3
    assert {part.split(":")[0] for part in bad.reason.split("; ")} == {"email", "age", "gender", "signup_date"}


def test_item_and_edge_files_through_the_command(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text(
        '{"sku": "T-1", "title": "Oolong", "category_path": "Food/Tea", "price": 12.5, "currency": "CNY"}\n'
        '{"sku": "T-2", "price": -3}\n'
    )
    edges = tmp_path / "edges.csv"
    edges.write_text("source_id,target_id,relation\nu1,u2,follow\nu1,u1,follow\nu2,u3,befriend\n")

    call_command("import_events", str(items), "--format", "jsonl", "--kind", "items")
    call_command("import_events", str(edges), "--format", "csv", "--kind", "edges")

    assert list(Item.objects.values_list("sku", "title")) == [("T-1", "Oolong")]
    assert SocialEdge.objects.count() == 1
    reasons = sorted(QuarantinedRow.objects.values_list("line_number", "reason"))
    assert reasons[0][0] == 2 and reasons[0][1].startswith("price:")
    assert [r[0] for r in reasons[1:]] == [3, 4]
    assert "target_id: must differ from source_id" in reasons[1][1]
    assert reasons[2][1].startswith("relation:")


def test_a_batch_of_more_customers_than_the_lock_table_holds_is_upserted(tmp_path):
    """A 1 MiB block of a customers CSV holds about 20,000 rows, one transaction. Locking 25,000
    customers one advisory lock each overflowed PostgreSQL's shared lock table (64 per transaction
    × connections, 12,800 on the embedded server: "out of shared memory"); they are locked by
    bucket, at most 256 locks, so a batch of any size goes through, created then updated."""
    from ingestion.services import customers_upsert

    rows = [{"external_id": f"bulk-{n}", "age": 30 + n % 40} for n in range(25000)]

    assert customers_upsert(rows=rows, source="default") == 25000
    assert customers_upsert(rows=[{**row, "age": 20} for row in rows], source="default") == 25000
    assert Customer.objects.filter(age=20).count() == 25000
