from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from privacy.database_dump import DumpError, database_dump


class Command(BaseCommand):
    help = ("Back up the whole database (pg_dump, custom format) to PATH. Keep the erasure journal "
            "(ERASURE_JOURNAL_PATH) apart from the backups: `restore` replays it.")

    def add_arguments(self, parser):
        parser.add_argument("path")

    def handle(self, *args, **options):
        path = Path(options["path"])
        try:
            size = database_dump(path=path)
        except DumpError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"backup written: {path} ({size:,} bytes)")
