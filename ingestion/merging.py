"""The ingestion side of an identity merge (profiles.merges keeps the journal and the profiles):
lock both customers, move events and social edges from one customer to another and back, mark a
customer merged into another or not."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import connection
from django.db.models import Q

from ingestion.models import Customer, SocialEdge
from ingestion.pseudonyms import customer_key
from ingestion.selectors import customer_by_external_id


class CustomerGone(LookupError):
    """A customer of the merge no longer exists (erased meanwhile)."""


def customer_get_or_create(*, source: str, external_id: str) -> Customer:
    """The customer with this external id (made under any pseudonym key of the ring), created as
    events would create it."""
    if customer := customer_by_external_id(source=source, external_id=external_id):
        return customer
    customer, _ = Customer.objects.get_or_create(key=customer_key(source=source, external_id=external_id),
                                                 defaults={"source": source})
    return customer


def customer_merged_into_set(*, customer_id: int, survivor_id: int | None) -> None:
    """Mark the customer merged into `survivor_id` (None: no longer merged)."""
    Customer.objects.filter(pk=customer_id).update(merged_into_id=survivor_id)


def customers_lock(*customer_ids: int) -> dict[int, Customer]:
    """Row locks in id order, so two merges of the same pair never deadlock."""
    locked = {c.pk: c for c in Customer.objects.select_for_update().filter(pk__in=customer_ids).order_by("pk")}
    if len(locked) != len(set(customer_ids)):
        raise CustomerGone("a customer of this merge no longer exists")
    return locked


def events_move(*, from_id: int, to_id: int, event_ids: list[uuid.UUID] | None = None) -> list[uuid.UUID]:
    """Move all of a customer's events (or exactly these) to another; returns the ids moved."""
    with connection.cursor() as cursor:
        if event_ids is None:
            cursor.execute(
                "UPDATE ingestion_event SET customer_id = %s WHERE customer_id = %s RETURNING event_id", [to_id, from_id]
            )
        else:
            cursor.execute(
                "UPDATE ingestion_event SET customer_id = %s WHERE customer_id = %s AND event_id = ANY(%s::uuid[]) "
                "RETURNING event_id",
                [to_id, from_id, list(event_ids)],
            )
        return sorted(row[0] for row in cursor.fetchall())


def _edge_as_json(edge: SocialEdge) -> dict:
    return {
        "id": edge.pk, "source_customer_id": edge.source_customer_id, "target_customer_id": edge.target_customer_id,
        "relation": edge.relation, "occurred_at": edge.occurred_at.isoformat() if edge.occurred_at else None,
        "weight": edge.weight,
    }


def edges_repoint(*, merged_id: int, survivor_id: int) -> dict:
    """Re-point the merged customer's edges to the survivor. An edge that would become a self-loop
    or repeat one the survivor has is dropped, and kept whole in the journal to re-create on undo."""
    edges = list(
        SocialEdge.objects.select_for_update()
        .filter(Q(source_customer_id=merged_id) | Q(target_customer_id=merged_id))
        .order_by("pk")
    )
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
    for end in ("source", "target"):
        ids = [e["id"] for e in repointed if e["end"] == end]
        SocialEdge.objects.filter(pk__in=ids).update(**{f"{end}_customer_id": survivor_id})
    return {"repointed": repointed, "dropped": dropped}


def edges_restore(*, merged_id: int, survivor_id: int, edges: dict) -> None:
    for moved in edges.get("repointed", []):
        end = moved["end"]
        edge = SocialEdge.objects.filter(pk=moved["id"], **{f"{end}_customer_id": survivor_id}).first()
        if edge is None:  # deleted since, with a customer at its other end
            continue
        setattr(edge, f"{end}_customer_id", merged_id)
        twin = SocialEdge.objects.filter(
            source_customer_id=edge.source_customer_id, target_customer_id=edge.target_customer_id, relation=edge.relation
        ).exclude(pk=edge.pk)
        if twin.exists():  # the merged customer got the same edge again since the merge
            edge.delete()
        else:
            edge.save(update_fields=[f"{end}_customer"])
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
