"""Erasure latency and residue: on a store of --customers customers and --events events (synthetic
shop with PII, social edges and profiles; its own database portrait_erasure, --reuse keeps it),
file, verify and execute an erasure request for --subjects random customers, one after another,
timing the execution (the request is already verified, as in the admin's "execute" action).

Residue, per erased subject: rows left that name it (the customer by key, its events, profile,
segment memberships, social edges, identity merges; quarantined rows and the audit log containing
the external id or email) plus whether it is missing from the suppression list; must be 0.
One JSON line last: {"subjects", "p50_ms", "p95_ms", "max_ms", "residue", "customers", "events"}.
"""

import argparse
import json
import random
import sys
import time

import os

os.environ.setdefault("EMBEDDED_DATABASE_NAME", "portrait_erasure")

from _setup import django_ready  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shop_prepare(customers: int, events: int, seed: int) -> None:
    from ingestion.import_jobs import synthetic_shop_load
    from profiles.builds import profiles_build

    log(f"loading {customers:,} customers / {events:,} events")
    synthetic_shop_load(customers=customers, events=events, seed=seed)
    log("building profiles")
    profiles_build()


def residue_of(external_id: str, email: str | None, source: str) -> int:
    from django.db import connection

    from ingestion.pseudonyms import customer_key
    from privacy.suppression_tokens import suppression_token
    from privacy.models import SuppressedSubject

    key = customer_key(source=source, external_id=external_id)
    found = 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM ingestion_customer WHERE key = %s", [key])
        ids = [r[0] for r in cursor.fetchall()]
        found += len(ids)
        if ids:
            for table, column in (("ingestion_event", "customer_id"), ("profiles_profile", "customer_id"),
                                  ("segments_segmentmembership", "customer_id"),
                                  ("ingestion_socialedge", "source_customer_id"),
                                  ("ingestion_socialedge", "target_customer_id")):
                cursor.execute(f"SELECT count(*) FROM {table} WHERE {column} = ANY(%s)", [ids])
                found += cursor.fetchone()[0]
        for needle in filter(None, (external_id, email, key)):
            # quarantined rows are encrypted: erasure finds them by token (tests/privacy/test_quarantine_protection.py)
            for table, column in (("privacy_auditentry", "details::text"),
                                  ("privacy_privacyrequest", "receipt::text")):
                cursor.execute(f"SELECT count(*) FROM {table} WHERE position(%s IN {column}) > 0", [needle])
                found += cursor.fetchone()[0]
    if not SuppressedSubject.objects.filter(token=suppression_token(source=source, external_id=external_id)).exists():
        found += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--reuse", action="store_true", help="keep the shop already in the bench database")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    django_ready(empty=not args.reuse)
    from django.contrib.auth.models import Group, User

    from ingestion.pseudonyms import pii_decrypt
    from ingestion.models import Customer, Event
    from ingestion.import_jobs import SYNTHETIC_SOURCE
    from privacy import services

    if not args.reuse or not Customer.objects.exists():
        if args.reuse:
            django_ready(empty=True)
        shop_prepare(args.customers, args.events, args.seed)
    customers = Customer.objects.count()
    events = Event.objects.count()
    officer, _ = User.objects.get_or_create(username="bench-compliance", defaults={"is_staff": True})
    officer.groups.add(Group.objects.get(name="Compliance"))
    officer = User.objects.get(pk=officer.pk)

    # external ids of the synthetic shop are C0000001 … (7 digits at least); pick subjects still stored
    rng = random.Random(args.seed)
    from ingestion.pseudonyms import customer_key

    picked = []
    while len(picked) < args.subjects:
        external_id = f"C{1 + rng.randrange(args.customers):0{max(7, len(str(args.customers)))}d}"
        customer = Customer.objects.filter(key=customer_key(source=SYNTHETIC_SOURCE, external_id=external_id)).first()
        if customer is not None and external_id not in {p[0] for p in picked}:
            email = pii_decrypt(customer.email_encrypted) if customer.email_encrypted else None
            picked.append((external_id, email))
    log(f"{customers:,} customers, {events:,} events; erasing {len(picked)} subjects")

    latencies, residue = [], 0
    for n, (external_id, email) in enumerate(picked, 1):
        request = services.privacy_request_file(kind="erasure", source=SYNTHETIC_SOURCE, external_id=external_id,
                                                actor=officer)
        services.privacy_request_verify(request=request, actor=officer)
        started = time.perf_counter()
        done = services.privacy_request_execute(request=request, actor=officer)
        latencies.append(time.perf_counter() - started)
        assert done.state == "completed", done.error
        residue += residue_of(external_id, email, SYNTHETIC_SOURCE)
        if n % 50 == 0:
            log(f"  {n} erased, last {latencies[-1] * 1000:.0f} ms")
    latencies.sort()

    def percentile(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 1)

    print(json.dumps({"subjects": len(latencies), "p50_ms": percentile(0.5), "p95_ms": percentile(0.95),
                      "max_ms": round(latencies[-1] * 1000, 1), "residue": residue, "customers": customers,
                      "events": events}))


if __name__ == "__main__":
    main()
