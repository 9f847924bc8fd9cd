"""One connection per worker for the rest of a transaction on a Citus cluster (issue 16, README
"Scale-out: Citus").

After a write that touches several shards in parallel, Citus refuses a write to a reference table or
to a coordinator table tied to one by foreign keys in the same transaction ("cannot modify table …
because there was a parallel operation on a distributed table"). A transaction that does both calls
this first. On a single PostgreSQL server the setting is an unknown dotted name, which PostgreSQL
accepts as a placeholder and ignores: no branch on the database kind."""


def shard_writes_sequential(cursor) -> None:
    """Run this transaction's multi-shard writes over one connection per worker (SET LOCAL: the
    transaction's end resets it)."""
    cursor.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
