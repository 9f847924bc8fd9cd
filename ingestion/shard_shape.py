"""SQL that gives the customer-keyed tables the shape a Citus cluster shards (README "Scale-out"):
a customer id that never changes in place, and an event table hash-partitioned by customer.
Used by migrations, so it depends on nothing but its arguments."""

REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION portrait_refuse_customer_id_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the customer id of a % row cannot change (column %): move the row with INSERT ... SELECT and DELETE',
        TG_TABLE_NAME, TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END
$$
"""


def customer_id_fixed(table: str, column: str) -> tuple[str, str]:
    """(forward, reverse) SQL of the trigger that refuses to change `column` of a row of `table`:
    Citus refuses to update a distribution column, and PostgreSQL would move the row between hash
    partitions, so the single-node store refuses it too and code that works here works sharded."""
    trigger = f"{table}_customer_id_fixed"
    return (
        f"CREATE TRIGGER {trigger} BEFORE UPDATE OF {column} ON {table} FOR EACH ROW "
        f"WHEN (OLD.{column} IS DISTINCT FROM NEW.{column}) EXECUTE FUNCTION portrait_refuse_customer_id_update('{column}')",
        f"DROP TRIGGER IF EXISTS {trigger} ON {table}",
    )


def primary_key_with_customer(table: str, column: str) -> tuple[str, str]:
    """(forward, reverse) SQL that makes `table`'s primary key (column, id)."""
    return (
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, ADD CONSTRAINT {table}_pkey PRIMARY KEY ({column}, id)",
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, ADD CONSTRAINT {table}_pkey PRIMARY KEY (id)",
    )


def event_table_partitioned(partitions: int) -> str:
    """Re-create ingestion_event as a table hash-partitioned by customer_id, its primary key
    (customer_id, event_id), each partition with a (customer_id, occurred_at) B-tree and a BRIN on
    occurred_at; rows, defaults, checks and the arrival sequence carried over."""
    parts = "\n".join(
        f"CREATE TABLE ingestion_event_p{i} PARTITION OF ingestion_event FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i});"
        for i in range(partitions)
    )
    return f"""
ALTER SEQUENCE ingestion_event_arrival_seq OWNED BY NONE;
ALTER TABLE ingestion_event RENAME TO ingestion_event_single;
ALTER TABLE ingestion_event_single RENAME CONSTRAINT ingestion_event_pkey TO ingestion_event_single_pkey;
ALTER INDEX event_customer_time RENAME TO event_customer_time_single;
ALTER INDEX event_time_brin RENAME TO event_time_brin_single;
CREATE TABLE ingestion_event (LIKE ingestion_event_single INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY HASH (customer_id);
{parts}
ALTER TABLE ingestion_event ADD CONSTRAINT ingestion_event_pkey PRIMARY KEY (customer_id, event_id);
CREATE INDEX event_customer_time ON ingestion_event (customer_id, occurred_at);
CREATE INDEX event_time_brin ON ingestion_event USING brin (occurred_at);
INSERT INTO ingestion_event SELECT * FROM ingestion_event_single;
DROP TABLE ingestion_event_single;
ALTER SEQUENCE ingestion_event_arrival_seq OWNED BY ingestion_event.arrival;
"""


EVENT_TABLE_SINGLE = """
ALTER SEQUENCE ingestion_event_arrival_seq OWNED BY NONE;
ALTER TABLE ingestion_event RENAME TO ingestion_event_partitioned;
ALTER TABLE ingestion_event_partitioned RENAME CONSTRAINT ingestion_event_pkey TO ingestion_event_partitioned_pkey;
ALTER INDEX event_customer_time RENAME TO event_customer_time_partitioned;
ALTER INDEX event_time_brin RENAME TO event_time_brin_partitioned;
CREATE TABLE ingestion_event (LIKE ingestion_event_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE ingestion_event ADD CONSTRAINT ingestion_event_pkey PRIMARY KEY (event_id);
CREATE INDEX event_customer_time ON ingestion_event (customer_id, occurred_at);
CREATE INDEX event_time_brin ON ingestion_event USING brin (occurred_at);
INSERT INTO ingestion_event SELECT * FROM ingestion_event_partitioned;
DROP TABLE ingestion_event_partitioned;
ALTER SEQUENCE ingestion_event_arrival_seq OWNED BY ingestion_event.arrival;
"""
