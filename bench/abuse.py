"""One token must not be able to stall the product (issue 19, resource consumption).

On loopback, a production-style server (gunicorn, sync workers) serves a victim: clients reading
profiles and similar customers with their own token. First the victim runs alone (the unloaded
figure), then again while an attacker with one token runs each resource attack in turn for a
bounded time. An attack is "refused or bounded" when every answer is a refusal that names the limit
(400/413/429, or 503 statement_timeout) or the work it caused stayed within its cap (segments
created, refresh tasks queued, rows counted). No Celery worker runs: queued work is measured on the
broker, where an unbounded attack would pile it up.

One JSON line last: {"attacks", "refused_or_bounded", "victim_unloaded_p95_ms", "victim_p95_ms",
"victim_errors", "per_attack": {...}}. Targets: every attack refused or bounded,
victim_p95_ms ≤ 2 × victim_unloaded_p95_ms, no victim errors.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import random
import time

os.environ.setdefault("EMBEDDED_DATABASE_NAME", "portrait_abuse")

from api_load import client_run, log, server_start, shop_ready  # noqa: E402
from ingest_api import free_port  # noqa: E402


class Attacker:
    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body=None) -> tuple[int, dict, float]:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        start = time.perf_counter()
        try:
            self.connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = self.connection.getresponse()
            raw = response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return 599, {}, time.perf_counter() - start
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return status, data, time.perf_counter() - start

    def repeat(self, seconds: float, method: str, path, body=None) -> list[tuple[int, dict, float]]:
        """The same request back to back for `seconds` (path and body may be callables of the attempt)."""
        answers, end, i = [], time.perf_counter() + seconds, 0
        while time.perf_counter() < end:
            answers.append(self.call(method, path(i) if callable(path) else path, body(i) if callable(body) else body))
            i += 1
        return answers


def _refusals(answers, allowed=(400, 413, 429)) -> bool:
    return bool(answers) and all(status in allowed or (status == 503 and data.get("error") == "statement_timeout")
                                 for status, data, _ in answers)


def _statuses(answers) -> dict:
    counts: dict = {}
    for status, _, _ in answers:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return counts


def attacks_run(port: int, token: str, keys: list[str], seconds: float) -> dict:
    """Each attack for `seconds`; returns per attack whether it was refused or bounded, and how."""
    import redis
    from django.conf import settings

    from segments.models import Segment

    attacker = Attacker(port, token)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    rng = random.Random(5)
    seeds = rng.sample(keys, min(len(keys), settings.API_MAX_SEEDS))
    out = {}

    def record(name, answers, bounded, **detail):
        out[name] = {"refused_or_bounded": bool(bounded), "requests": len(answers), "statuses": _statuses(answers),
                     "max_ms": round(max((a[2] for a in answers), default=0) * 1000, 1), **detail}
        log(f"{name}: {out[name]}")

    answers = attacker.repeat(seconds, "POST", "/api/v1/similar",
                              {"seed_keys": seeds, "n": settings.API_MAX_LOOKALIKE, "method": "multi_query"})
    record("similar_multi_query_max_seeds_times_n", answers, _refusals(answers))

    answers = attacker.repeat(seconds, "GET", lambda i: f"/api/v1/profiles/{rng.choice(keys)}/similar?k=100000")
    record("similar_k_beyond_bound", answers, _refusals(answers))

    answers = attacker.repeat(seconds, "POST", "/api/v1/segments", lambda i: {
        "name": f"huge lookalike {i}", "kind": "lookalike", "seed_keys": seeds, "size": settings.SEGMENT_MAX_LOOKALIKE,
        "method": "multi_query"})
    record("lookalike_segment_multi_query_max", answers, _refusals(answers))

    queued_before = broker.llen("segments")
    answers = attacker.repeat(seconds, "POST", "/api/v1/segments",
                              lambda i: {"name": f"flood {i}", "kind": "rule", "rule": "events >= 1"})
    owned = Segment.objects.filter(created_by_token__name="bench-attacker").count()
    record("segment_creation_flood", answers, owned <= settings.SEGMENTS_MAX_PER_TOKEN,
           segments_owned=owned, limit=settings.SEGMENTS_MAX_PER_TOKEN)

    answers = attacker.repeat(seconds, "POST", "/api/v1/segments/clusters", {"k": 50})
    owned = Segment.objects.filter(created_by_token__name="bench-attacker").count()
    record("clustering_flood", answers, owned <= settings.SEGMENTS_MAX_PER_TOKEN, segments_owned=owned)

    target = Segment.objects.filter(created_by_token__name="bench-attacker").order_by("pk").first()
    refresh_queued_before = broker.llen("segments")
    answers = attacker.repeat(seconds, "POST", f"/api/v1/segments/{target.pk}/refresh")
    queued = broker.llen("segments") - refresh_queued_before
    record("segment_refresh_flood", answers, queued <= 1, tasks_queued=queued,
           tasks_queued_by_creations=refresh_queued_before - queued_before)

    answers = attacker.repeat(seconds, "POST", "/api/v1/segments/rules/check", {"rule": "events >= 0"})
    counted = [data.get("matching") or 0 for status, data, _ in answers if status == 200]
    record("rule_check_broad", answers,
           all(c <= settings.RULE_CHECK_MAX_COUNT for c in counted)
           and _refusals([a for a in answers if a[0] != 200]) if len(counted) < len(answers) else True,
           largest_count=max(counted, default=0))

    batch = [{"customer_id": f"c{i}", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}
             for i in range(settings.API_MAX_BATCH_EVENTS + 1)]
    answers = attacker.repeat(seconds, "POST", "/api/v1/events", {"events": batch})
    record("oversized_event_batch", answers, _refusals(answers))

    answers = attacker.repeat(seconds, "GET", "/api/v1/segments?page_size=1000000")
    record("page_size_beyond_bound", answers, _refusals(answers))
    return out


def attacker_process(port: int, token: str, keys: list[str], seconds: float, queue) -> None:
    import django

    django.setup()
    queue.put(attacks_run(port, token, keys, seconds))


def victims_run(port: int, token: str, keys: list[str], clients: int, warmup: float, duration: float, seed: int):
    queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=client_run,
                                         args=(port, token, keys, seed * 100 + i, warmup, duration, queue))
                 for i in range(clients)]
    for p in processes:
        p.start()
    return processes, queue


def victims_collect(processes, queue) -> tuple[list[float], list[str]]:
    results = [queue.get() for _ in processes]
    for p in processes:
        p.join()
    return sorted(x for r in results for x in r[0]), [e for r in results for e in r[1]]


def p95_ms(latencies: list[float]) -> float:
    return round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attack-seconds", type=float, default=5.0, help="time each attack runs")
    parser.add_argument("--victims", type=int, default=2, help="victim client processes")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reuse", action="store_true", help="keep the shop already in the bench database")
    args = parser.parse_args()

    shop_ready(customers=args.customers, events=args.events, epochs=1, seed=11, reuse=args.reuse)
    from access.models import ApiToken
    from access.services import api_token_create
    from profiles.selectors import profiles_visible
    from segments.models import Segment

    Segment.objects.all().delete()
    ApiToken.objects.filter(name__startswith="bench-").delete()
    keys = list(profiles_visible().exclude(embedding=None).values_list("customer__key", flat=True))
    _, victim = api_token_create(name="bench-victim", scopes=["profiles:read", "similarity:read"],
                                 requests_per_minute=100_000_000)
    # the attacker holds one ordinary token: every scope it needs, the default throttle
    _, attacker = api_token_create(name="bench-attacker",
                                   scopes=["profiles:read", "similarity:read", "segments:write", "events:write"])
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("segments")
    attack_total = 9 * args.attack_seconds
    port = free_port()
    server = server_start(port, args.workers)
    try:
        log(f"victim alone: {args.victims} clients × {attack_total:.0f} s")
        processes, queue = victims_run(port, victim, keys, args.victims, 3.0, attack_total, seed=1)
        unloaded, unloaded_errors = victims_collect(processes, queue)
        log("victim under attack")
        processes, queue = victims_run(port, victim, keys, args.victims, 0.0, attack_total + 3.0, seed=2)
        results = multiprocessing.Queue()
        attacker_proc = multiprocessing.Process(target=attacker_process,
                                                args=(port, attacker, keys, args.attack_seconds, results))
        time.sleep(1.5)
        attacker_proc.start()
        per_attack = results.get()
        attacker_proc.join()
        loaded, errors = victims_collect(processes, queue)
    finally:
        server.terminate()
        server.wait(timeout=30)
        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("segments")
    errors += unloaded_errors
    if errors:
        log(f"{len(errors)} victim errors, first: {errors[0]}")
    print(json.dumps({
        "attacks": len(per_attack),
        "refused_or_bounded": sum(a["refused_or_bounded"] for a in per_attack.values()),
        "victim_unloaded_p95_ms": p95_ms(unloaded), "victim_p95_ms": p95_ms(loaded), "victim_errors": len(errors),
        "victim_requests": len(loaded), "victim_unloaded_requests": len(unloaded),
        "per_attack": per_attack, "workers": args.workers, "profiles": len(keys),
    }))


if __name__ == "__main__":
    main()
