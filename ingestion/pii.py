"""Personal data at rest: re-encryption under the newest key, and the audited reveal of a customer's
clear values."""

from collections.abc import Callable

from django.core.exceptions import PermissionDenied
from django.db import connection, models, transaction

from ingestion.pseudonyms import pii_decrypt, pii_rotate
from ingestion.models import Customer
from privacy.audit import audit_record
from privacy.models import PrivacyRequest

CUSTOMER_PII_COLUMNS = {"email": "email_encrypted", "name": "name_encrypted", "phone": "phone_encrypted"}


def pii_reencrypt(*, batch_size: int = 2000, on_progress: Callable[[dict], None] | None = None) -> dict:
    """Re-encrypt every stored PII token under the newest key of PII_ENCRYPTION_KEYS, so the older
    keys can then be dropped. Batches of rows, each batch's rewrites in one transaction; a token is
    rewritten only while it is still the one read (compare and swap), so a concurrent write is
    neither lost nor overwritten, without row locks (which a Citus cluster refuses across shards).
    Tokens already under the newest key are left alone, so a rerun or a resumed run is harmless.
    Returns the rows checked (`customers`, `privacy_requests`) and `fields_reencrypted`;
    `on_progress` gets those counts after each batch."""
    counts = {"customers": 0, "privacy_requests": 0, "fields_reencrypted": 0}
    # a pending privacy request keeps its subject's external id encrypted with the same keys
    for count_name, model, columns in (
        ("customers", Customer, tuple(CUSTOMER_PII_COLUMNS.values())),
        ("privacy_requests", PrivacyRequest, ("subject_encrypted",)),
    ):
        for rows, fields in _table_reencrypt(model, columns, batch_size):
            counts[count_name] += rows
            counts["fields_reencrypted"] += fields
            if on_progress:
                on_progress(dict(counts))
    return counts


def _table_reencrypt(model: type[models.Model], columns: tuple[str, ...], batch_size: int):
    """Yields (rows checked, tokens rewritten) per batch, walking the table in primary-key order.
    Each rewrite is its own statement by primary key (one shard on a cluster), sent pipelined."""
    with_token = models.Q()
    for column in columns:
        with_token |= models.Q(**{f"{column}__isnull": False})
    table = model._meta.db_table
    last_pk = 0
    while True:
        batch = list(model.objects.filter(with_token, pk__gt=last_pk).order_by("pk").values_list("pk", *columns)[:batch_size])
        if not batch:
            return
        fields = 0
        with transaction.atomic(), connection.cursor() as cursor:
            for position, column in enumerate(columns, start=1):
                swaps = [(rotated, row[0], old) for row in batch if (old := row[position]) is not None
                         and (rotated := pii_rotate(old)) != bytes(old)]
                if swaps:
                    cursor.executemany(f"UPDATE {table} SET {column} = %s WHERE id = %s AND {column} = %s", swaps)  # noqa: S608
                    fields += cursor.rowcount
        last_pk = batch[-1][0]
        yield len(batch), fields


def customer_pii_reveal(*, customer: Customer, actor) -> dict[str, str | None]:
    """The customer's clear email, name and phone, for a user holding `ingestion.view_pii`. Every
    reveal is audited (which fields, by whom, of which customer id; never the values)."""
    if not actor.has_perm("ingestion.view_pii"):
        raise PermissionDenied
    clear = {name: pii_decrypt(getattr(customer, column)) for name, column in CUSTOMER_PII_COLUMNS.items()}
    audit_record(
        action="pii.revealed", actor=actor, target=customer,
        details={"fields": [name for name, value in clear.items() if value]},
    )
    return clear
