"""Reads of the operators' dashboard: sizes, recent activity, the active model, profile freshness,
queue depths, recent jobs and open privacy requests. Every figure is cheap on a store of tens of
millions of events: totals come from the planner's row estimate, time-range counts from the BRIN index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Max, Min
from django.utils import timezone

from config.queues import Queue

# Below this many rows a table is counted exactly (a bounded count stops here); above it the
# planner's estimate from pg_class.reltuples is close enough and costs nothing.
EXACT_COUNT_LIMIT = 100_000
RECENT_ROWS = 5


@dataclass(frozen=True)
class RowCount:
    value: int
    estimated: bool


def table_rows(*, table: str) -> RowCount:
    """Rows of a table: exact while small, pg_class's estimate once large (a full count of the
    events table would scan tens of millions of rows)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
        estimate = row[0] if row else -1
        if estimate > EXACT_COUNT_LIMIT:
            return RowCount(value=int(estimate), estimated=True)
        # never analysed (-1) or small: count, but never past the limit
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {connection.ops.quote_name(table)} LIMIT %s) AS bounded",
            [EXACT_COUNT_LIMIT + 1],
        )
        (counted,) = cursor.fetchone()
    if counted > EXACT_COUNT_LIMIT:
        return RowCount(value=max(int(estimate), counted), estimated=True)
    return RowCount(value=counted, estimated=False)


def events_since(*, since: datetime) -> int:
    """Events that occurred since a moment: a range scan on the BRIN index of occurred_at."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ingestion_event WHERE occurred_at >= %s", [since])
        return cursor.fetchone()[0]


def model_version_active_summary() -> dict | None:
    """The active model version with its validation and test metrics as (name, value) pairs."""
    from training.models import ModelVersion

    version = ModelVersion.objects.filter(is_active=True).defer("item_ids").select_related("run").first()
    if version is None:
        return None
    metrics = version.metrics or {}

    def pairs(split: str) -> list[tuple[str, float]]:
        values = metrics.get(split) or {}
        return [(name, value) for name, value in sorted(values.items()) if isinstance(value, int | float)]

    return {"version": version, "valid": pairs("valid"), "test": pairs("test")}


def profiles_freshness(*, now: datetime | None = None) -> dict:
    """How far behind the profiles are: the oldest and newest watermark (ingestion time of the
    newest event a profile includes) and when a profile was last written."""
    from profiles.models import Profile

    now = now or timezone.now()
    bounds = Profile.objects.aggregate(
        oldest=Min("watermark"), newest=Max("watermark"), computed=Max("computed_at"),
    )
    return {
        "oldest_watermark": bounds["oldest"],
        "newest_watermark": bounds["newest"],
        "last_computed_at": bounds["computed"],
        "oldest_lag": (now - bounds["oldest"]) if bounds["oldest"] else None,
    }


def queue_depths(*, broker_url: str | None = None, timeout: float = 1.0) -> dict[str, int] | None:
    """Messages waiting in each Celery queue (Redis lists on the broker, one per priority step),
    or None when the broker does not answer."""
    import redis

    from config.celery import app

    url = broker_url or app.conf.broker_url
    if not url or not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    # kombu's Redis transport keeps priorities 1–9 in lists named "<queue>\x06\x16<priority>"
    names = {q.value: [q.value, *(f"{q.value}\x06\x16{p}" for p in (3, 6, 9))] for q in Queue}
    try:
        with client.pipeline(transaction=False) as pipe:
            for keys in names.values():
                for key in keys:
                    pipe.llen(key)
            lengths = iter(pipe.execute())
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return {queue: sum(next(lengths) for _ in keys) for queue, keys in names.items()}


def import_jobs_recent(*, limit: int = RECENT_ROWS):
    from ingestion.models import ImportJob

    return list(ImportJob.objects.only(
        "id", "source", "format", "file_path", "status", "rows_inserted", "progress_total", "progress_done", "created_at",
    ).order_by("-created_at")[:limit])


def training_runs_recent(*, limit: int = RECENT_ROWS):
    from training.models import TrainingRun

    return list(TrainingRun.objects.only("id", "arch", "status", "device", "created_at", "finished_at")
                .order_by("-created_at")[:limit])


def privacy_requests_open():
    from privacy.models import PrivacyRequest, RequestState

    return PrivacyRequest.objects.exclude(state__in=[RequestState.COMPLETED, RequestState.CLOSED])


def customer_value_summary() -> dict | None:
    """The latest CLV fit's back-test against BG/NBD and how many customers each audience holds."""
    from crm.models import Audience, CustomerPrediction
    from crm.selectors import clv_fit_latest

    fit = clv_fit_latest()
    if fit is None:
        return None
    with connection.cursor() as cursor:  # one pass over the predictions for all four audiences
        cursor.execute(f"SELECT unnest(audiences), count(*) FROM {CustomerPrediction._meta.db_table} GROUP BY 1")
        sizes = dict(cursor.fetchall())
    audiences = [(label, sizes.get(value, 0), value) for value, label in Audience.choices]
    evaluation = fit.evaluation if "model" in fit.evaluation else None
    return {"fit": fit, "evaluation": evaluation, "audiences": audiences}


def replicas_summary() -> dict | None:
    """Each read replica measured now: reachable, lag, paused replay, whether it has replayed the last
    erasure, and whether the API reads from it (else why not). None without replicas."""
    import redis

    from config.db_router import ERASURE_LSN_KEY, mark_key, replica_states, replicas_configured

    if not replicas_configured():
        return None
    try:
        from config.broker_redis import broker_redis

        erasure_lsn = int(broker_redis().get(mark_key(ERASURE_LSN_KEY)) or 0)
    except (redis.RedisError, OSError):
        erasure_lsn = None
    rows = []
    for state in replica_states(max_age_s=0):
        settings_dict = _settings_of(state.alias)
        rows.append({
            "alias": state.alias, "address": f"{settings_dict.get('HOST') or '—'}:{settings_dict.get('PORT') or 5432}",
            "reachable": state.reachable, "lag_s": state.lag_s, "replay_paused": state.replay_paused,
            "erasures_replayed": None if erasure_lsn is None or state.replay_lsn is None else state.replay_lsn >= erasure_lsn,
            "in_use": state.usable, "skipped_because": state.skipped_because, "error": state.error,
        })
    return {"rows": rows, "max_lag_s": settings.DATABASE_REPLICA_MAX_LAG_S}


def _settings_of(alias: str) -> dict:
    from django.db import connections

    return connections[alias].settings_dict


def reliability_summary() -> dict:
    """What needs an operator after a fault: tasks given up on (dead letters), imports whose worker
    died (no heartbeat for IMPORT_STALE_SECONDS), profile builds and training runs silent for
    JOB_STUCK_MINUTES, privacy requests whose execution died or failed five times, and refreshes
    waiting in the outbox for the broker."""
    from django.conf import settings
    from django.db.models import Count

    from ingestion.models import RefreshOutbox
    from ingestion.selectors import import_jobs_stale
    from pipeline.models import DeadLetter
    from privacy.selectors import privacy_requests_stuck
    from profiles.models import BuildStatus, ProfileBuild
    from training.models import RunStatus, TrainingRun

    stuck_since = timezone.now() - timedelta(minutes=settings.JOB_STUCK_MINUTES)
    outbox = RefreshOutbox.objects.aggregate(entries=Count("id"), oldest=Min("created_at"), attempts=Max("attempts"))
    stuck_builds = list(ProfileBuild.objects.filter(status=BuildStatus.RUNNING, heartbeat_at__lt=stuck_since).order_by("pk"))
    stuck_runs = list(TrainingRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=stuck_since).order_by("pk"))
    return {
        "dead_letters": DeadLetter.objects.count(),
        "dead_letters_recent": list(DeadLetter.objects.order_by("-created_at")[:RECENT_ROWS]),
        "stuck_imports": import_jobs_stale(),
        "stale_minutes": max(1, settings.IMPORT_STALE_SECONDS // 60),
        "stuck_builds": stuck_builds,
        "stuck_training_runs": stuck_runs,
        "stuck_jobs": len(stuck_builds) + len(stuck_runs),
        "stuck_minutes": settings.JOB_STUCK_MINUTES,
        "stuck_privacy_requests": privacy_requests_stuck(),
        "privacy_retry_minutes": max(1, settings.PRIVACY_RETRY_SECONDS // 60),
        "outbox": outbox,
    }


def dashboard_summary(*, now: datetime | None = None) -> dict:
    """Everything the dashboard shows, in one dict."""
    from profiles.models import FeatureSet

    now = now or timezone.now()
    open_requests = privacy_requests_open()
    return {
        "customers": table_rows(table="ingestion_customer"),
        "profiles": table_rows(table="profiles_profile"),
        "events": table_rows(table="ingestion_event"),
        "events_24h": events_since(since=now - timedelta(hours=24)),
        "events_7d": events_since(since=now - timedelta(days=7)),
        "model": model_version_active_summary(),
        "feature_set": FeatureSet.objects.filter(is_active=True).only("id", "version", "customers_fitted").first(),
        "freshness": profiles_freshness(now=now),
        "queues": queue_depths(),
        "import_jobs": import_jobs_recent(),
        "training_runs": training_runs_recent(),
        "privacy_requests_open": open_requests.count(),
        "privacy_requests_recent": list(open_requests.order_by("-id")[:RECENT_ROWS]),
        "customer_value": customer_value_summary(),
        "replicas": replicas_summary(),
        "reliability": reliability_summary(),
    }
