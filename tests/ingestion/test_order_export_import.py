"""A shop's order export (one line per order line, customer columns on every line) loads in one
command: value maps turn order statuses into event types, the customer columns are normalised and
kept once per customer (the latest line by time), a dry run shows it all and writes nothing."""

import csv
import random

import pytest
from django.core.management import CommandError, call_command

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Customer, Event, EventType, ImportJob, Item, QuarantinedRow
from ingestion.pseudonyms import customer_key, pii_decrypt
from profiles.models import Profile

pytestmark = pytest.mark.django_db(transaction=True)

COLUMNS = ["Customer ID", "Age", "Gender", "Loyalty Member", "Product Type", "SKU", "Rating", "Order Status",
           "Payment Method", "Total Price", "Unit Price", "Quantity", "Purchase Date"]
ORDER_OPTIONS = [
    "--map", "customer_id=Customer ID", "--map", "item_id=SKU", "--map", "timestamp=Purchase Date",
    "--map", "quantity=Quantity", "--map", "value=Total Price",
    "--map", "age=Age", "--map", "gender=Gender", "--map", "is_loyalty_member=Loyalty Member",
    "--value-map", 'event_type="Order Status":Completed=purchase,Cancelled=cancellation',
]


def order_export(path, customers: int = 30, seed: int = 3) -> dict:
    """Writes the export and returns what each customer should end with: spend on completed lines,
    cancelled lines, and the attributes of their latest line by date (written out of date order)."""
    rng = random.Random(seed)
    expected = {}
    lines = []
    for c in range(customers):
        customer_id = str(1000 + c)
        spend, cancelled, latest = 0.0, 0, None
        for n in range(rng.randint(3, 6)):
            day = rng.randint(1, 28)
            status = "Cancelled" if n == 1 or rng.random() < 0.2 else "Completed"
            quantity = rng.randint(1, 3)
            unit = round(rng.uniform(5, 200), 2)
            age = 20 + c % 40 + (day > 14)  # a birthday in the month: the latest line's age is the truth
            gender = "Male" if c % 2 else "Female"
            loyalty = "Yes" if (c % 3 == 0) == (day > 14) else "No"  # changes with time
            row = [customer_id, str(age), gender, loyalty, rng.choice(["Laptop", "Tablet", "Phone"]),
                   f"SKU{rng.randint(1, 20):03d}", str(rng.randint(1, 5)), status, rng.choice(["Card", "PayPal"]),
                   f"{unit * quantity:.2f}", f"{unit:.2f}", str(quantity), f"2025-03-{day:02d}T{10 + n:02d}:00:00"]
            lines.append(row)
            if status == "Completed":
                spend += round(unit * quantity, 2)
            else:
                cancelled += 1
            if latest is None or row[-1] > latest[-1]:
                latest = row
        expected[customer_id] = {"spend": round(spend, 2), "cancelled": cancelled, "age": int(latest[1]),
                                 "gender": latest[2].lower(), "loyal": latest[3] == "Yes"}
    rng.shuffle(lines)  # an export sorted by something else than time
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(lines)
    return expected


def customer(external_id: str, source: str = "shop") -> Customer:
    return Customer.objects.get(key=customer_key(source=source, external_id=external_id))


def test_an_order_export_loads_in_one_command_and_spend_excludes_cancelled_orders(tmp_path):
    path = tmp_path / "orders.csv"
    expected = order_export(path)
    lines = sum(1 for _ in open(path)) - 1

    call_command("import_events", str(path), "--format", "csv", "--source", "shop", *ORDER_OPTIONS)

    job = ImportJob.objects.get()
    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (lines, lines, 0)
    assert Customer.objects.count() == len(expected)  # each customer once, however many lines
    assert job.report["customers_updated_from_lines"] == len(expected)
    assert job.report["customer_attribute_lines"] == lines
    for external_id, truth in expected.items():
        stored = customer(external_id)
        assert (stored.age, stored.gender, stored.is_loyalty_member) == (truth["age"], truth["gender"], truth["loyal"])
        assert stored.age_band  # derived from the age
        events = Event.objects.filter(customer=stored)
        assert events.filter(event_type=EventType.CANCEL).count() == truth["cancelled"]
        traits = Profile.objects.get(customer=stored).traits
        assert traits["monetary"] == pytest.approx(truth["spend"], abs=0.01)
        assert traits["cancellations"] == truth["cancelled"]
    assert Event.objects.filter(event_type=EventType.CANCEL).count() == sum(t["cancelled"] for t in expected.values())
    assert Event.objects.exclude(event_type__in=[EventType.PURCHASE, EventType.CANCEL]).count() == 0


def test_a_status_the_value_map_lacks_is_quarantined_naming_field_and_value(tmp_path):
    path = tmp_path / "orders.csv"
    order_export(path, customers=3)
    with open(path, "a", newline="") as handle:
        csv.writer(handle).writerow(["2000", "41", "Male", "Yes", "Phone", "SKU001", "4", "Pending", "Card", "10.00",
                                     "10.00", "1", "2025-03-03T10:00:00"])

    call_command("import_events", str(path), "--format", "csv", "--source", "shop", "--no-profiles", *ORDER_OPTIONS)

    row = QuarantinedRow.objects.get()
    assert row.reason == "event_type: 'Pending' is not in the value map"  # not also "required"
    assert "2000,41,Male" in pii_decrypt(row.raw_encrypted)
    assert not Customer.objects.filter(key=customer_key(source="shop", external_id="2000")).exists()


def test_customer_columns_that_cannot_be_normalised_quarantine_the_line_with_the_field_named(tmp_path):
    path = tmp_path / "orders.csv"
    rows = [
        ["1", "34", "M", "Y", "2025-03-01T10:00:00", "Completed"],
        ["2", "34", "Mle", "Y", "2025-03-01T10:00:00", "Completed"],  # a typo: never guessed
        ["3", "34.5", "F", "N", "2025-03-01T10:00:00", "Completed"],
        ["4", "34", "F", "maybe", "2025-03-01T10:00:00", "Completed"],
    ]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Customer ID", "Age", "Gender", "Loyalty Member", "Purchase Date", "Order Status"])
        writer.writerows(rows)

    job = import_job_run(job_id=import_job_create(path=path, fmt="csv", source="shop", options={
        "mapping": {"customer_id": "Customer ID", "age": "Age", "gender": "Gender",
                    "is_loyalty_member": "Loyalty Member", "timestamp": "Purchase Date", "event_type": "Order Status"},
        "value_maps": {"event_type": {"Completed": "purchase", "Cancelled": "cancel"}},
        "constants": {"value": "1"},
    }).pk)

    reasons = dict(QuarantinedRow.objects.values_list("line_number", "reason"))
    assert reasons == {
        3: "gender: 'Mle' is not a gender we know (male, female, other)",
        4: "age: '34.5' is not an age (a whole number 0–130)",
        5: "is_loyalty_member: 'maybe' is not yes or no",
    }
    assert job.rows_inserted == 1 and Event.objects.count() == 1  # a refused line brings no event either
    assert (customer("1").gender, customer("1").is_loyalty_member, customer("1").age) == ("male", True, 34)


def test_dry_run_prints_the_mapped_lines_errors_and_value_counts_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "orders.csv"
    order_export(path, customers=5)
    with open(path, "a", newline="") as handle:
        csv.writer(handle).writerow(["2000", "41", "Robot", "Yes", "Phone", "SKU001", "4", "Pending", "Card", "10.00",
                                     "10.00", "1", "2025-03-03T10:00:00"])

    call_command("import_events", str(path), "--format", "csv", "--source", "shop", "--dry-run", *ORDER_OPTIONS)

    out = capsys.readouterr().out
    assert out.startswith("dry run: nothing was written.")
    assert "would be quarantined" in out and "1 would be quarantined" in out
    assert "\tpurchase\t" in out or "\tcancellation\t" in out  # lines shown with our values
    assert "gender: 'Robot' is not a gender we know (male, female, other): 1" in out
    assert "event_type: 'Pending' is not in the value map: 1" in out
    assert "Completed → purchase:" in out and "Cancelled → cancel:" in out and "Pending → —: 1" in out
    assert "Male → male:" in out and "Yes → True:" in out
    for model in (ImportJob, Event, Customer, Item, QuarantinedRow):
        assert model.objects.count() == 0, model


def test_value_map_option_errors_name_the_problem(tmp_path):
    path = tmp_path / "orders.csv"
    order_export(path, customers=2)

    with pytest.raises(CommandError, match="not SOURCE=OURS"):
        call_command("import_events", str(path), "--format", "csv", "--value-map", "event_type=Order Status:Completed")
    with pytest.raises(CommandError, match="unknown field 'colour'"):
        call_command("import_events", str(path), "--format", "csv", "--value-map", "colour=a=b")
    with pytest.raises(CommandError, match="mapped column"):  # a column the file lacks: nothing is written
        call_command("import_events", str(path), "--format", "csv", "--no-profiles",
                     "--value-map", "event_type=Status:Completed=purchase")
    assert Event.objects.count() == 0


def test_a_customers_file_takes_the_same_spellings_and_keeps_one_row_per_customer(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("id,gender,loyal,band\n"
                    "a,男,是,18 to 24\n"
                    "b,Female,No,65 and over\n"
                    "a,Male,否,25–34\n"  # the later line wins
                    "c,female,1,20-29\n")  # not one of our bands: refused, not rounded

    job = import_job_run(job_id=import_job_create(path=path, fmt="csv", source="shop", options={
        "kind": "customers", "mapping": {"external_id": "id", "gender": "gender", "is_loyalty_member": "loyal",
                                         "age_band": "band"}}).pk)

    assert (job.rows_read, job.rows_rejected) == (4, 1)
    assert dict(QuarantinedRow.objects.values_list("line_number", "reason")) == {
        5: "age_band: '20-29' is not one of our age bands (<18, 18-24, 25-34, 35-44, 45-54, 55-64, 65+)"}
    assert (customer("a").gender, customer("a").is_loyalty_member, customer("a").age_band) == ("male", False, "25-34")
    assert (customer("b").gender, customer("b").is_loyalty_member, customer("b").age_band) == ("female", False, "65+")
    assert Customer.objects.count() == 2


def test_dry_run_of_a_customers_file_shows_its_rows_and_errors_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "customers.csv"
    path.write_text("id,gender,loyal\na,Male,Yes\nb,Robot,No\n")

    call_command("import_events", str(path), "--format", "csv", "--kind", "customers", "--dry-run",
                 "--map", "external_id=id", "--map", "gender=gender", "--map", "is_loyalty_member=loyal")

    out = capsys.readouterr().out
    assert "2 lines looked at (the first chunk); 1 would be quarantined." in out
    assert "2\ta\tmale\tTrue" in out
    assert "gender: 'Robot' is not a gender we know (male, female, other): 1" in out
    assert Customer.objects.count() == 0 and ImportJob.objects.count() == 0
