"""The ingestion side of an identity merge (profiles.merges keeps the journal and the profiles):
lock both customers, move events and social edges from one customer to another and back, mark a
customer merged into another or not.

Rows move between customers by INSERT … SELECT and DELETE, never by updating a customer id: the
customer id is the shard key of a Citus cluster (and the hash-partition key of the event table),
which cannot change in place (README "Scale-out")."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import connection
from django.db.models import Q

from ingestion import bulk
from ingestion.models import Customer, SocialEdge
from ingestion.pseudonyms import customer_key, pseudonym_key_id
from ingestion.selectors import customer_by_external_id


class CustomerGone(LookupError):
    """A customer of the merge no longer exists (erased meanwhile)."""


def customer_get_or_create(*, source: str, external_id: str) -> Customer:
    """The customer with this external id (made under any pseudonym key of the ring), created as
    events would create it."""
    if customer := customer_by_external_id(source=source, external_id=external_id):
        return customer
    key = customer_key(source=source, external_id=external_id)
    with connection.cursor() as cursor:
        bulk.customers_create(cursor, keys=[key], source=source, key_id=pseudonym_key_id())
        cursor.execute("SELECT customer_id FROM ingestion_customerkey WHERE key = %s", [key])
        return Customer.objects.get(pk=cursor.fetchone()[0])


def customer_merged_into_set(*, customer_id: int, survivor_id: int | None) -> None:
    """Mark the customer merged into `survivor_id` (None: no longer merged)."""
    Customer.objects.filter(pk=customer_id).update(merged_into_id=survivor_id)


def customers_lock(*customer_ids: int) -> dict[int, Customer]:
    """Row locks in id order, so two merges of the same pair never deadlock."""
    # one row lock per customer in id order: a Citus cluster locks rows of one shard per statement
    locked = {pk: c for pk in sorted(set(customer_ids)) if (c := Customer.objects.select_for_update().filter(pk=pk).first())}
    if len(locked) != len(set(customer_ids)):
        raise CustomerGone("a customer of this merge no longer exists")
    return locked


_EVENT_COLUMNS = (
    "item_id", "event_type", "occurred_at", "quantity", "value", "currency", "rating", "session_id", "channel", "device",
    "order_id", "context", "flags", "import_job_id", "ingested_at", "arrival",
)


def events_move(*, from_id: int, to_id: int, event_ids: list[uuid.UUID] | None = None) -> list[uuid.UUID]:
    """Move all of a customer's events (or exactly these) to another; returns the ids moved. An
    event the other customer already has under the same id stays where it is (the two would be one
    event twice), so moving back restores exactly what moved."""
    columns = ", ".join(_EVENT_COLUMNS)
    only = "" if event_ids is None else " AND event_id = ANY(%s::uuid[])"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO ingestion_event (event_id, customer_id, {columns}) "  # noqa: S608
            f"SELECT event_id, %s, {columns} FROM ingestion_event WHERE customer_id = %s{only} "
            "ORDER BY event_id ON CONFLICT (customer_id, event_id) DO NOTHING RETURNING event_id",
            [to_id, from_id, *([list(event_ids)] if event_ids is not None else [])],
        )
        moved = sorted(row[0] for row in cursor.fetchall())
        cursor.execute("DELETE FROM ingestion_event WHERE customer_id = %s AND event_id = ANY(%s::uuid[])", [from_id, moved])
        return moved


def _edges_source_move(*, edge_ids: list[int], from_id: int, to_id: int) -> None:
    """Give these edges of `from_id` another source customer, keeping their ids."""
    if not edge_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ingestion_socialedge (id, source_customer_id, target_customer_id, relation, occurred_at, weight) "
            "SELECT id, %s, target_customer_id, relation, occurred_at, weight FROM ingestion_socialedge "
            "WHERE source_customer_id = %s AND id = ANY(%s) ORDER BY id",
            [to_id, from_id, edge_ids],
        )
        cursor.execute("DELETE FROM ingestion_socialedge WHERE source_customer_id = %s AND id = ANY(%s)", [from_id, edge_ids])


def _edge_as_json(edge: SocialEdge) -> dict:
    return {
        "id": edge.pk, "source_customer_id": edge.source_customer_id, "target_customer_id": edge.target_customer_id,
        "relation": edge.relation, "occurred_at": edge.occurred_at.isoformat() if edge.occurred_at else None,
        "weight": edge.weight,
    }


def edges_repoint(*, merged_id: int, survivor_id: int) -> dict:
    """Re-point the merged customer's edges to the survivor. An edge that would become a self-loop
    or repeat one the survivor has is dropped, and kept whole in the journal to re-create on undo."""
    # no row locks on the edges (a Citus cluster refuses FOR UPDATE across shards): an edge imported for
    # the merged customer while this runs stays with it, as one imported after the merge would
    edges = list(SocialEdge.objects.filter(Q(source_customer_id=merged_id) | Q(target_customer_id=merged_id)).order_by("pk"))
    taken = set(
        SocialEdge.objects.filter(Q(source_customer_id=survivor_id) | Q(target_customer_id=survivor_id))
        .values_list("source_customer_id", "target_customer_id", "relation")
    )
    repointed, dropped = [], []
    for edge in edges:
        end = "source" if edge.source_customer_id == merged_id else "target"
        source = survivor_id if end == "source" else edge.source_customer_id
        target = survivor_id if end == "target" else edge.target_customer_id
        if source == target or (source, target, edge.relation) in taken:
            dropped.append(_edge_as_json(edge))
            continue
        taken.add((source, target, edge.relation))
        repointed.append({"id": edge.pk, "end": end})
    SocialEdge.objects.filter(pk__in=[e["id"] for e in dropped]).delete()
    _edges_source_move(edge_ids=[e["id"] for e in repointed if e["end"] == "source"], from_id=merged_id, to_id=survivor_id)
    SocialEdge.objects.filter(pk__in=[e["id"] for e in repointed if e["end"] == "target"]).update(target_customer_id=survivor_id)
    return {"repointed": repointed, "dropped": dropped}


def edges_restore(*, merged_id: int, survivor_id: int, edges: dict) -> None:
    back_to_source = []
    for moved in edges.get("repointed", []):
        end = moved["end"]
        edge = SocialEdge.objects.filter(pk=moved["id"], **{f"{end}_customer_id": survivor_id}).first()
        if edge is None:  # deleted since, with a customer at its other end
            continue
        source = merged_id if end == "source" else edge.source_customer_id
        target = merged_id if end == "target" else edge.target_customer_id
        twin = SocialEdge.objects.filter(source_customer_id=source, target_customer_id=target, relation=edge.relation)
        if twin.exists():  # the merged customer got the same edge again since the merge
            edge.delete()
        elif end == "source":
            back_to_source.append(edge.pk)
        else:
            SocialEdge.objects.filter(pk=edge.pk).update(target_customer_id=merged_id)
    _edges_source_move(edge_ids=back_to_source, from_id=survivor_id, to_id=merged_id)
    dropped = edges.get("dropped", [])
    alive = set(
        Customer.objects.filter(
            pk__in={e["source_customer_id"] for e in dropped} | {e["target_customer_id"] for e in dropped}
        ).values_list("pk", flat=True)
    )
    SocialEdge.objects.bulk_create(
        [
            SocialEdge(
                id=e["id"], source_customer_id=e["source_customer_id"], target_customer_id=e["target_customer_id"],
                relation=e["relation"], weight=e["weight"],
                occurred_at=datetime.fromisoformat(e["occurred_at"]) if e["occurred_at"] else None,
            )
            for e in dropped
            if e["source_customer_id"] in alive and e["target_customer_id"] in alive
        ],
        ignore_conflicts=True,
    )
