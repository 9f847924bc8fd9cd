"""The ingest lock: how writers of subject data and an erasure agree on who goes first.

Writers of subject data (event batches, import chunks, customer and edge upserts, profile and
forecast writes) hold this advisory lock in shared mode for their transaction and check the
suppression list inside it; an erasure, once the subject is on the list, takes it exclusively for an
instant, which waits out every writer that may have checked before. A writer that starts later sees
the suppression. Part of the privacy core, below every app that writes subject data.
"""

INGEST_LOCK = 0x506F7274  # "Port"


def ingest_guard(cursor) -> None:
    """Call inside a writer's transaction, before it checks suppression and writes."""
    cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [INGEST_LOCK])


def erasure_lock(cursor) -> None:
    """Inside an erasure's transaction: wait until every writer holding the lock has committed, and
    keep new ones out until the erasure (with its suppression) commits."""
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INGEST_LOCK])
