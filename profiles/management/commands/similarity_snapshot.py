from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from profiles.memory_search import memory_snapshot_build, memory_snapshots_refresh
from profiles.selectors import SPACES


class Command(BaseCommand):
    help = (
        "Write the in-memory similarity graph's snapshot (profiles.memory_search) of each space in "
        "SIMILARITY_MEMORY_SPACES that is missing or far behind, or with --force of the spaces named; serving "
        "processes load it at their next change-log read."
    )

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="rebuild even when the snapshot is current")
        parser.add_argument("--space", action="append", choices=sorted(SPACES), help="with --force: this space (repeatable)")

    def handle(self, *args, **opts):
        if not settings.SIMILARITY_MEMORY_INDEX:
            raise CommandError("SIMILARITY_MEMORY_INDEX is off: no process would load a snapshot")
        if opts["force"]:
            reports = {space: memory_snapshot_build(space=space) for space in opts["space"] or settings.SIMILARITY_MEMORY_SPACES}
        else:
            reports = memory_snapshots_refresh()
        if not reports:
            self.stdout.write("snapshots current; none written")
        for space, report in reports.items():
            self.stdout.write(f"{space}: {report['profiles']} profiles, read {report['read_s']} s, graph {report['build_s']} s")
