import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from pipeline import flows
from profiles import feature_sets
from profiles.models import BuildStatus, Profile, ProfileBuild
from profiles.tasks import profile_build_queue


class Command(BaseCommand):
    help = (
        "Fit a new feature set and build every customer's profile, then refit the customer-value model "
        "(forecasts, demand, audiences): in this process with a progress bar, or with --celery spread over the "
        "workers (a chord of chunk tasks whose callback queues the refit) while this command shows progress."
    )

    def add_arguments(self, parser):
        parser.add_argument("--celery", action="store_true", help="run the chunks on Celery workers")
        parser.add_argument("--chunk", type=int, default=None, help="customers per chunk")
        parser.add_argument("--sample", type=int, default=None, help="customers the feature set is fitted on")
        parser.add_argument("--if-missing", action="store_true", help="do nothing when profiles exist")

    def handle(self, *args, **opts):
        if opts["if_missing"] and Profile.objects.exists():
            self.stdout.write("profiles exist; left as they are")
            return
        started = time.monotonic()
        try:
            build = self._celery(opts) if opts["celery"] else self._inline(opts)
        except feature_sets.NothingToProfile as exc:
            raise CommandError(str(exc)) from exc
        if build.status != BuildStatus.SUCCEEDED:
            raise CommandError(f"profile build #{build.pk} {build.status}: {build.error}")
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"profile build #{build.pk}: {build.profiles_written} profiles, feature set v{build.feature_set.version}, "
            f"{elapsed:.1f}s ({build.profiles_written / max(elapsed, 1e-9):,.0f} profiles/s)"
        )

    def _inline(self, opts) -> ProfileBuild:
        bar = tqdm(unit="chunk", desc="profiles", disable=None)

        def on_chunk(build):
            bar.total = build.chunks_total
            bar.update(build.chunks_done - bar.n)

        try:
            return flows.profiles_build(chunk_customers=opts["chunk"], sample_size=opts["sample"], on_chunk=on_chunk)
        finally:
            bar.close()

    def _celery(self, opts) -> ProfileBuild:
        from config.celery import broker_check

        broker_check()
        build = profile_build_queue(chunk_customers=opts["chunk"], sample_size=opts["sample"])
        with tqdm(total=build.chunks_total, unit="chunk", desc="profiles (workers)", disable=None) as bar:
            while True:
                build.refresh_from_db()
                bar.update(build.chunks_done - bar.n)
                if build.status != BuildStatus.RUNNING:
                    return build
                time.sleep(0.5)
