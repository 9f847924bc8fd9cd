"""The store has the shape a Citus cluster shards by customer (issue 16, README "Scale-out"), checked
on the single-node PostgreSQL every test runs on: every unique constraint of a customer-keyed table
holds its customer id, no foreign key that a sharded cluster could not enforce, a customer id never
changes in place, the event table is hash-partitioned by customer, a re-import changes nothing,
and the kNN query over the store keeps its recall against exact search."""

import numpy as np
import pytest
from django.apps import apps
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import Customer, CustomerKey, Event, SocialEdge
from ingestion.pseudonyms import customer_key
from pipeline.sharding import CUSTOMER_KEYED, KEY_LOOKUP, REFERENCE
from profiles import selectors
from profiles.models import FUSED_DIMENSIONS, FeatureSet, Profile

pytestmark = pytest.mark.django_db


def _unique_indexes(table: str) -> dict[str, list[str]]:
    """{index name: its columns} of every unique index (primary keys included) of `table` and, for a
    partitioned table, of each partition."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT i.indexrelid::regclass::text, array_agg(a.attname ORDER BY k.ord)
            FROM pg_index i
            CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indisunique AND i.indrelid IN (
                SELECT %s::regclass UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)
            GROUP BY 1
            """,
            [table, table],
        )
        return dict(cursor.fetchall())


def _foreign_keys() -> list[tuple[str, list[str], str, list[str]]]:
    """(table, columns, referenced table, referenced columns) of every foreign key in the schema."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.conrelid::regclass::text,
                   (SELECT array_agg(attname ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(n, ord)
                    JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.n),
                   c.confrelid::regclass::text,
                   (SELECT array_agg(attname ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY k(n, ord)
                    JOIN pg_attribute ON attrelid = c.confrelid AND attnum = k.n)
            FROM pg_constraint c WHERE c.contype = 'f' AND c.conparentid = 0
            """
        )
        return cursor.fetchall()


def test_every_unique_constraint_of_a_customer_keyed_table_holds_its_customer_id():
    checked = 0
    for table, column in {**CUSTOMER_KEYED, **KEY_LOOKUP}.items():
        indexes = _unique_indexes(table)
        assert indexes, f"{table} has no primary key"
        for name, columns in indexes.items():
            assert column in columns, f"{name} on {table} is unique on {columns} without {column}"
            checked += 1
    # the event table's key is (customer_id, event_id) on the parent and on every partition
    assert _unique_indexes("ingestion_event")["ingestion_event_pkey"] == ["customer_id", "event_id"]
    assert checked >= len(CUSTOMER_KEYED) + settings.EVENT_PARTITIONS


def test_every_model_that_references_a_customer_is_sharded_with_it_or_has_no_database_constraint():
    """A new model that points at a customer must be listed in pipeline.sharding (and then reference
    its customer through its distribution column) or keep its reference out of the database."""
    tables = {}
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if field.is_relation and field.related_model is Customer:
                tables.setdefault(model._meta.db_table, []).append(field)
    assert set(CUSTOMER_KEYED) - {"ingestion_customer"} <= set(tables)
    for table, fields in tables.items():
        for field in fields:
            if field.db_constraint:
                assert CUSTOMER_KEYED.get(table) == field.column, (
                    f"{table}.{field.column} is a database foreign key to customers, but the table is not "
                    f"sharded by that column: pipeline.sharding.CUSTOMER_KEYED or db_constraint=False")


def test_foreign_keys_are_those_a_sharded_cluster_can_enforce():
    sharded = set(CUSTOMER_KEYED) | set(KEY_LOOKUP)
    foreign_keys = _foreign_keys()
    assert foreign_keys, "the schema has foreign keys: the query must find them"
    for table, columns, referenced, referenced_columns in foreign_keys:
        if referenced in sharded:
            # only between co-located shards: from a customer-keyed table's distribution column to the customer
            assert table in CUSTOMER_KEYED and columns == [CUSTOMER_KEYED[table]], (table, columns, referenced)
            assert (referenced, referenced_columns) == ("ingestion_customer", ["id"]), (table, referenced)
        if table in REFERENCE:
            assert referenced not in sharded, f"reference table {table} has a foreign key to {referenced}"


def test_the_event_table_is_hash_partitioned_by_customer_each_partition_with_its_indexes():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_partkeydef('ingestion_event'::regclass)")
        assert cursor.fetchone()[0] == "HASH (customer_id)"
        cursor.execute(
            """
            SELECT p.inhrelid::regclass::text,
                   array_agg(pg_get_indexdef(i.indexrelid) ORDER BY pg_get_indexdef(i.indexrelid))
            FROM pg_inherits p JOIN pg_index i ON i.indrelid = p.inhrelid
            WHERE p.inhparent = 'ingestion_event'::regclass GROUP BY 1
            """
        )
        partitions = dict(cursor.fetchall())
    assert len(partitions) == settings.EVENT_PARTITIONS
    for name, definitions in partitions.items():
        assert any("USING btree (customer_id, occurred_at)" in d for d in definitions), (name, definitions)
        assert any("USING brin (occurred_at)" in d for d in definitions), (name, definitions)
        assert any("UNIQUE" in d and "(customer_id, event_id)" in d for d in definitions), (name, definitions)


def _customer_with_events(external_id: str, events: int = 2) -> Customer:
    from ingestion.services import events_ingest_batch

    events_ingest_batch(rows=[
        {"customer_id": external_id, "item_id": f"sku-{i}", "event_type": "view",
         "timestamp": f"2026-11-0{i + 1}T10:00:00Z"} for i in range(events)], source="default")
    return Customer.objects.get(key=customer_key(source="default", external_id=external_id))


def test_a_customer_id_never_changes_in_place():
    alice, bob = _customer_with_events("alice"), _customer_with_events("bob")
    SocialEdge.objects.create(source_customer=alice, target_customer=bob, relation=1)
    feature_set = FeatureSet.objects.create(version=1, feature_names=["x"], pipeline=b"", pipeline_sha256="0" * 64)
    Profile.objects.create(customer=alice, feature_set=feature_set, snapshot_at=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname = 'portrait_refuse_customer_id_update' AND NOT t.tgisinternal"
        )
        guarded = {table for table, _ in cursor.fetchall()}
    assert set(CUSTOMER_KEYED) <= guarded
    moves = [
        ("UPDATE ingestion_event SET customer_id = %s WHERE customer_id = %s", [bob.pk, alice.pk]),
        ("UPDATE ingestion_customer SET id = %s WHERE id = %s", [bob.pk + 1000, alice.pk]),
        ("UPDATE ingestion_socialedge SET source_customer_id = %s WHERE source_customer_id = %s", [bob.pk + 1, alice.pk]),
        ("UPDATE profiles_profile SET customer_id = %s WHERE customer_id = %s", [bob.pk, alice.pk]),
    ]
    for sql, params in moves:
        with pytest.raises(IntegrityError, match="customer id of a .* row cannot change"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
    # other columns of the same rows still change, and an update that keeps the id passes the trigger
    assert Event.objects.filter(customer=alice).update(flags=1) == 2
    with connection.cursor() as cursor:
        cursor.execute("UPDATE ingestion_event SET customer_id = customer_id WHERE customer_id = %s", [alice.pk])
        assert cursor.rowcount == 2


def test_a_key_names_one_customer_through_the_key_lookup():
    alice = _customer_with_events("alice")
    assert list(CustomerKey.objects.filter(customer=alice).values_list("key", flat=True)) == [alice.key]
    # a customer made one at a time (the admin, a test) gets its lookup row too, and a second one with
    # the same key is refused as the unique index on the key refused it before
    carol = Customer.objects.create(key="k" * 64, source="default")
    assert CustomerKey.objects.get(key="k" * 64).customer_id == carol.pk
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(key="k" * 64, source="default")


@pytest.mark.django_db(transaction=True)
def test_reimporting_a_file_changes_nothing_and_event_ids_are_unique_per_customer(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,customer_id,item_id,event_type,timestamp,value\n"
        + "".join(f"e{i % 7},c{i % 5},sku-{i % 3},purchase,2026-11-{1 + i % 20:02d}T10:00:00Z,{i}.50\n" for i in range(60))
    )

    def store():
        return sorted(Event.objects.values_list("customer_id", "event_id", "value", "occurred_at", "arrival"))

    first = import_job_run(job_id=import_job_create(path=path, fmt="csv", options={}).pk)
    before = (store(), Customer.objects.count(), CustomerKey.objects.count())
    second = import_job_run(job_id=import_job_create(path=path, fmt="csv", options={}).pk)

    # ids e0..e6 reused across customers c0..c4: 35 distinct (customer, id) pairs, 25 repeats in the file
    assert (first.rows_inserted, first.rows_duplicate) == (35, 25)
    assert (second.rows_inserted, second.rows_duplicate) == (0, 60)
    assert (store(), Customer.objects.count(), CustomerKey.objects.count()) == before
    assert before[1:] == (5, 5)


def test_nearest_neighbours_over_the_store_keep_their_recall_against_exact_search():
    rng = np.random.default_rng(16)
    profiles, clusters, k = 4000, 50, 10
    centres = rng.normal(size=(clusters, FUSED_DIMENSIONS))
    vectors = centres[rng.integers(clusters, size=profiles)] + rng.normal(scale=0.4, size=(profiles, FUSED_DIMENSIONS))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    feature_set = FeatureSet.objects.create(version=1, feature_names=["x"], pipeline=b"", pipeline_sha256="0" * 64,
                                            is_active=True)
    customers = Customer.objects.bulk_create([Customer(key=f"knn-{i}", source="test") for i in range(profiles)])
    Profile.objects.bulk_create([
        Profile(customer=c, feature_set=feature_set, fused=v.astype(np.float32).tolist(), snapshot_at=timezone.now())
        for c, v in zip(customers, vectors, strict=True)
    ])
    ids = np.array([c.pk for c in customers])
    queries = centres[rng.integers(clusters, size=50)] + rng.normal(scale=0.4, size=(50, FUSED_DIMENSIONS))
    hits = 0
    with transaction.atomic(), connection.cursor() as cursor:
        # on 4,000 rows the planner would rightly sort exactly: make the query walk the HNSW index
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("EXPLAIN SELECT 1 FROM profiles_profile ORDER BY fused <=> %s::vector LIMIT 10",
                       [str(queries[0].tolist())])
        assert "profile_fused_hnsw" in "\n".join(row[0] for row in cursor.fetchall())
        for query in queries:
            found = selectors.profiles_nearest(candidates=Profile.objects.all(), column="fused", vector=query.tolist(),
                                               k=k, ef_search=100)
            exact = ids[np.argsort(-(vectors @ (query / np.linalg.norm(query))))[:k]]
            hits += len({p.customer_id for p, _ in found} & set(exact.tolist()))
    recall = hits / (k * len(queries))
    assert recall >= 0.95, recall


def test_a_key_whose_customer_was_removed_by_hand_gets_its_customer_back_not_a_dangling_id():
    alice = _customer_with_events("alice")
    with connection.cursor() as cursor:  # as a TRUNCATE of the customers alone would leave it
        cursor.execute("DELETE FROM ingestion_event WHERE customer_id = %s", [alice.pk])
        cursor.execute("DELETE FROM ingestion_customer WHERE id = %s", [alice.pk])
    again = _customer_with_events("alice", events=3)
    assert again.pk == alice.pk and Event.objects.filter(customer_id=alice.pk).count() == 3


@pytest.mark.parametrize("value", ["0", "2000"])
def test_a_partition_count_out_of_range_stops_start_up_naming_it(value):
    import os
    import subprocess
    import sys

    environment = dict(os.environ, EVENT_PARTITIONS=value, DJANGO_SETTINGS_MODULE="config.settings")
    started = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=settings.BASE_DIR,
                             env=environment, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert f"EVENT_PARTITIONS must be a whole number from 1 to 1024, not {int(value)!r}" in started.stderr
