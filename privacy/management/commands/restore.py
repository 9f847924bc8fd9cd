from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from privacy.database_dump import DumpError, database_restore
from privacy.erasure import erasure_journal_replay


class Command(BaseCommand):
    help = ("Replace the database's contents with a backup made by `backup`, then replay the erasure "
            "journal: every subject erased since the backup was taken is erased again and suppressed. "
            "Stop the web servers and workers first.")

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--yes", action="store_true", help="confirm: the current contents are replaced")

    def handle(self, *args, **options):
        if not options["yes"]:
            raise CommandError("restore replaces everything in the database: run it again with --yes")
        path = Path(options["path"])
        try:
            database_restore(path=path)
        except DumpError as exc:
            raise CommandError(str(exc)) from exc
        replay = erasure_journal_replay()
        self.stdout.write(
            f"restored {path}; erasure journal: {replay['entries']} entries, "
            f"{replay['subjects_erased_again']} subjects erased again ({replay['customers_removed']} customers)"
        )
