"""Distribute the store over a Citus cluster (issue 16, README "Scale-out: Citus", docs/scale-out.md).

On the coordinator of a Citus cluster (the `citus` extension installed, the workers and the
coordinator itself registered in `pg_dist_node`), `citus_distribute` turns the schema the migrations
made into the Citus layout of `pipeline.sharding`, in one transaction:

1. drop the single-node `<table>_customer_id_fixed` triggers of the tables it converts: Citus
   refuses to distribute a table that has triggers, and refuses the same update itself ("modifying
   the partition value of rows is not allowed"); and the profile table's vector-change triggers, so
   no in-memory similarity snapshot is written on a cluster (profiles.memory_search: pgvector's
   index per shard answers there);
2. drop every foreign key that touches a table it converts, keeping its definition: Citus checks
   each key whenever a table changes kind, and while they all exist no order of conversions passes
   (a reference table's local neighbours must not point at a distributed table, and a table
   pointing at a reference table must not be local any more);
3. shard the customer-keyed tables by their customer column, co-located with the customer table,
   the key lookup by its key in a co-location group of its own, and copy the reference tables to
   every node (the Django tables their keys reach become Citus local tables on the coordinator);
4. put the keys back, each one a key Citus enforces (between co-located tables on the distribution
   column, or to a reference table);
5. set the search defaults database-wide (Citus propagates ALTER DATABASE ... SET to the workers)
   and `citus.propagate_set_commands = 'local'`, so the SET LOCAL of a query reaches every shard.

The whole transaction runs in Citus's sequential mode: after a parallel operation on a distributed
table Citus refuses to touch a reference table in the same transaction. Running it again does
nothing but re-apply the settings; a table already distributed in another way is an error.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from psycopg import sql

from pipeline.sharding import CUSTOMER_KEYED, KEY_LOOKUP, REFERENCE
from profiles.memory_search import VECTOR_CHANGE_TRIGGERS
from profiles.selectors import MAX_SCAN_TUPLES

ANCHOR = "ingestion_customer"
TRIGGER_SUFFIX = "_customer_id_fixed"


class CitusUnavailable(RuntimeError):
    """This database is not a Citus coordinator ready to distribute to; the message says what to do."""


@dataclass(frozen=True)
class Step:
    """One table's conversion: `create_distributed_table(table, column, colocate_with)` or `create_reference_table(table)`."""

    table: str
    kind: str  # "distributed" or "reference"
    column: str | None = None
    colocate_with: str | None = None


@dataclass
class DistributionReport:
    version: str = ""
    converted: list[Step] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    triggers_dropped: list[str] = field(default_factory=list)
    foreign_keys_restored: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)


def distribution_plan(*, customer_keyed: dict[str, str], key_lookup: dict[str, str], reference: tuple[str, ...],
                      anchor: str = ANCHOR) -> list[Step]:
    """Every table's step in the order they can run: the anchor first (the others co-locate with
    it), the customer-keyed tables, the key lookup in its own group, then the reference tables."""
    if anchor not in customer_keyed:
        raise ValueError(f"the anchor {anchor} is not a customer-keyed table")
    steps = [Step(anchor, "distributed", customer_keyed[anchor], "none")]
    steps += [Step(table, "distributed", column, anchor) for table, column in customer_keyed.items() if table != anchor]
    steps += [Step(table, "distributed", column, "none") for table, column in key_lookup.items()]
    steps += [Step(table, "reference") for table in reference]
    return steps


def database_settings() -> dict[str, str]:
    """The defaults every node's sessions start with: the search settings of profiles.selectors, and
    SET LOCAL propagated to the shards (without it a transaction's SET LOCAL stays on the coordinator)."""
    return {
        "citus.propagate_set_commands": "local",
        "hnsw.ef_search": str(settings.SIMILARITY_EF_SEARCH),
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.max_scan_tuples": str(MAX_SCAN_TUPLES),
    }


def citus_check(cursor) -> str:
    """The installed Citus version; CitusUnavailable, saying what to run, when this database can't be distributed."""
    cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'")
    row = cursor.fetchone()
    if row is None:
        cursor.execute("SELECT current_database()")
        raise CitusUnavailable(
            f"the citus extension is not installed in database {cursor.fetchone()[0]!r}: install Citus on every node "
            "with shared_preload_libraries = 'citus', then run CREATE EXTENSION citus in this database on the "
            "coordinator and on every worker (docs/scale-out.md)"
        )
    cursor.execute(
        "SELECT count(*) FILTER (WHERE groupid = 0), count(*) FILTER (WHERE groupid <> 0 AND isactive AND noderole = 'primary') "
        "FROM pg_dist_node"
    )
    coordinator, workers = cursor.fetchone()
    if not coordinator:
        raise CitusUnavailable(
            "the coordinator is not in Citus's metadata: run SELECT citus_set_coordinator_host('<this host>', <port>); "
            "here first (the reference tables keep their foreign keys to Django's tables only through it)"
        )
    if not workers:
        raise CitusUnavailable("no active worker: add each with SELECT citus_add_node('<worker host>', <port>); here first")
    return row[0]


def _current_shape(cursor, table: str) -> tuple[str, str | None] | None:
    """("distributed", column), ("reference", None) or ("local", None) for a table in Citus's
    metadata; None for a plain PostgreSQL table."""
    cursor.execute(
        "SELECT partmethod, repmodel, CASE WHEN partmethod = 'h' THEN column_to_column_name(logicalrelid, partkey) END "
        "FROM pg_dist_partition WHERE logicalrelid = %s::regclass",
        [table],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    method, replication, column = row
    if method == "h":
        return ("distributed", column)
    return ("reference", None) if replication == "t" else ("local", None)


def _triggers(cursor, tables: list[str]) -> list[tuple[str, str]]:
    """(table, trigger) of the user triggers of `tables` (their clones on partitions left out)."""
    cursor.execute(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger "
        "WHERE NOT tgisinternal AND tgparentid = 0 AND tgrelid = ANY(%s::regclass[]) ORDER BY 1, 2",
        [tables],
    )
    return cursor.fetchall()


def _foreign_keys(cursor, tables: list[str]) -> list[tuple[str, str, str]]:
    """(table, constraint, definition) of every foreign key from or to one of `tables` (partitions' clones left out)."""
    cursor.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND conparentid = 0 AND (conrelid = ANY(%s::regclass[]) OR confrelid = ANY(%s::regclass[])) "
        "ORDER BY 1, 2",
        [tables, tables],
    )
    return cursor.fetchall()


def citus_distribute(*, shard_count: int | None = None) -> DistributionReport:
    """Distribute the store as the module docstring says; returns what it did and what was already done."""
    report = DistributionReport()
    plan = distribution_plan(customer_keyed=CUSTOMER_KEYED, key_lookup=KEY_LOOKUP, reference=REFERENCE)
    with transaction.atomic(), connection.cursor() as cursor:
        report.version = citus_check(cursor)
        cursor.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
        if shard_count is not None:
            cursor.execute(sql.SQL("SET LOCAL citus.shard_count TO {}").format(sql.Literal(int(shard_count))))
        todo = []
        for step in plan:
            current = _current_shape(cursor, step.table)
            if current == (step.kind, step.column):
                report.already.append(step.table)
            elif current in (None, ("local", None)):
                todo.append(step)
            else:
                raise CitusUnavailable(
                    f"{step.table} is already {current[0]}{f' by {current[1]}' if current[1] else ''}, not "
                    f"{step.kind}{f' by {step.column}' if step.column else ''}: undistribute it first (undistribute_table)"
                )
        tables = [step.table for step in todo]
        if todo:
            triggers = _triggers(cursor, tables)
            unknown = [f"{table}.{name}" for table, name in triggers
                       if name != f"{table}{TRIGGER_SUFFIX}" and name not in VECTOR_CHANGE_TRIGGERS]
            if unknown:
                raise CitusUnavailable(f"Citus distributes no table with triggers; these are not ours to drop: {', '.join(unknown)}")
            for table, name in triggers:
                cursor.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name), sql.Identifier(table)))
                report.triggers_dropped.append(f"{table}.{name}")
            keys = _foreign_keys(cursor, tables)
            for table, name, _ in keys:
                cursor.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(name)))
            for step in todo:
                if step.kind == "distributed":
                    cursor.execute("SELECT create_distributed_table(%s, %s, colocate_with => %s)",
                                   [step.table, step.column, step.colocate_with])
                else:
                    cursor.execute("SELECT create_reference_table(%s)", [step.table])
                report.converted.append(step)
            for table, name, definition in keys:
                cursor.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)))
                report.foreign_keys_restored.append(f"{table}.{name}")
        cursor.execute("SELECT current_database()")
        database = cursor.fetchone()[0]
        for name, value in database_settings().items():
            cursor.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(database), sql.SQL(".").join(map(sql.Identifier, name.split("."))), sql.Literal(value)))
            report.settings[name] = value
    return report
