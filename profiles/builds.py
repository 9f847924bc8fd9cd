"""Batch profile builds: fit a feature set, then store every live customer's profile chunk by
chunk (inline here, or fanned out by profiles.tasks), dropping and rebuilding the vector indexes
around big builds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Func, IntegerField, Value
from django.utils import timezone

from profiles.models import (
    BuildStatus,
    ProfileBuild,
)

logger = logging.getLogger(__name__)
from profiles.feature_sets import feature_set_fit
from profiles.services import profiles_store

# --- batch builds -------------------------------------------------------------------------------------

# A batch build rewrites every profile; keeping these HNSW indexes up to date row by row costs
# more than the rest of the build (~0.6 ms a row here), so big builds drop them and build them
# again at the end (pgvector's advice for bulk loads). Meanwhile similarity search on these two
# spaces still answers, by exact scan. The learned-embedding index belongs to training.
_REBUILT_INDEXES = ("profile_feature_vector_hnsw", "profile_fused_hnsw")


def _vector_indexes():
    from profiles.models import Profile

    return [index for index in Profile._meta.indexes if index.name in _REBUILT_INDEXES]


def _vector_indexes_drop() -> None:
    with connection.cursor() as cursor:
        for index in _vector_indexes():
            cursor.execute(f'DROP INDEX IF EXISTS "{index.name}"')


def profile_vector_indexes_ensure() -> list[str]:
    """Create any of the profile vector indexes that is missing; returns the names created."""
    from profiles.models import Profile

    created = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'profiles_profile'")
        present = {row[0] for row in cursor.fetchall()}
    for index in _vector_indexes():
        if index.name not in present:
            with transaction.atomic(), connection.schema_editor(atomic=False) as editor:
                editor.execute("SET LOCAL maintenance_work_mem = '512MB'")
                editor.add_index(Profile, index)
            created.append(index.name)
    return created



def _customer_id_ranges(chunk_customers: int) -> tuple[list[tuple[int, int]], int]:
    """Inclusive id ranges of `chunk_customers` live customers each, and the number of customers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM ingestion_customer WHERE merged_into_id IS NULL AND consent_profiling ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()]
    ranges = [(ids[i], ids[min(i + chunk_customers, len(ids)) - 1]) for i in range(0, len(ids), chunk_customers)]
    return ranges, len(ids)


def profile_build_start(*, created_by=None, chunk_customers: int | None = None, sample_size: int | None = None) -> ProfileBuild:
    """Fit a new feature set and plan the chunks. Run them with `profile_build_chunk` (inline) or
    `profiles.tasks.profile_build_queue` (Celery)."""
    build = ProfileBuild.objects.create(created_by=created_by, heartbeat_at=timezone.now())
    try:
        feature_set = feature_set_fit(sample_size=sample_size)
    except Exception as exc:
        ProfileBuild.objects.filter(pk=build.pk).update(status=BuildStatus.FAILED, error=str(exc)[:10_000], finished_at=timezone.now())
        raise
    ranges, customers = _customer_id_ranges(chunk_customers or settings.PROFILE_BUILD_CHUNK_CUSTOMERS)
    if customers >= settings.PROFILE_BUILD_REINDEX_MIN_CUSTOMERS:
        _vector_indexes_drop()
    build.feature_set = feature_set
    build.chunks_total = len(ranges)
    build.save(update_fields=["feature_set", "chunks_total"])
    build.ranges = ranges
    return build


BUILD_STALE_AFTER = timedelta(hours=6)


def profile_build_running() -> bool:
    """A build is running unless it finished or has been "running" so long that its worker died."""
    return ProfileBuild.objects.filter(status=BuildStatus.RUNNING, started_at__gte=timezone.now() - BUILD_STALE_AFTER).exists()


def profile_build_chunk(*, build_id: int, index: int, first_id: int, last_id: int) -> int:
    """Profile the live customers with first_id ≤ id ≤ last_id. Idempotent: a repeated chunk
    rewrites the same profiles and is counted once."""
    build = ProfileBuild.objects.select_related("feature_set").get(pk=build_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM ingestion_customer WHERE id BETWEEN %s AND %s AND merged_into_id IS NULL AND consent_profiling",
            [first_id, last_id],
        )
        ids = [row[0] for row in cursor.fetchall()]
    written = profiles_store(customer_ids=ids, feature_set=build.feature_set)
    ProfileBuild.objects.filter(pk=build_id).exclude(done_chunks__contains=[index]).update(
        heartbeat_at=timezone.now(),
        chunks_done=F("chunks_done") + 1,
        profiles_written=F("profiles_written") + written,
        done_chunks=Func(F("done_chunks"), Value(index, output_field=IntegerField()), function="array_append"),
    )
    return written


def profile_build_finish(*, build_id: int) -> ProfileBuild:
    profile_vector_indexes_ensure()
    # Fresh statistics before the first reads: with stale ones (every row rewritten), the planner
    # chose a scan-and-sort over the HNSW index for filtered similarity searches until autovacuum
    # came by (measured: p50 188 ms against 35 ms right after a build, bench/api_load.py).
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE profiles_profile")
    ProfileBuild.objects.filter(pk=build_id, status=BuildStatus.RUNNING).update(
        status=BuildStatus.SUCCEEDED, finished_at=timezone.now()
    )
    return ProfileBuild.objects.get(pk=build_id)


def profile_build_fail(*, build_id: int, error: str) -> None:
    profile_vector_indexes_ensure()
    ProfileBuild.objects.filter(pk=build_id).update(status=BuildStatus.FAILED, error=error[:10_000], finished_at=timezone.now())


def profiles_build(*, created_by=None, chunk_customers: int | None = None, sample_size: int | None = None,
                   on_chunk: Callable[[ProfileBuild], None] | None = None) -> ProfileBuild:
    """The whole batch build in this process, chunk after chunk."""
    build = profile_build_start(created_by=created_by, chunk_customers=chunk_customers, sample_size=sample_size)
    try:
        for index, (first_id, last_id) in enumerate(build.ranges):
            profile_build_chunk(build_id=build.pk, index=index, first_id=first_id, last_id=last_id)
            if on_chunk:
                build.refresh_from_db()
                on_chunk(build)
    except Exception as exc:
        profile_build_fail(build_id=build.pk, error=f"{exc.__class__.__name__}: {exc}")
        raise
    return profile_build_finish(build_id=build.pk)
