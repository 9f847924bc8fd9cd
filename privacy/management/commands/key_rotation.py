import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from privacy.key_rotation import (
    key_ids_missing_from_rings, pseudonym_key_usage, suppression_key_usage, suppression_rows_rekey,
)


class Command(BaseCommand):
    help = ("Report which key ids of SUPPRESSION_KEYS and PSEUDONYM_KEYS stored rows depend on; with --rekey, "
            "re-make under the newest suppression key the rows of the subjects whose external ids are given "
            "(README 'Rotating keys'). Exits 1 while rows depend on a key no longer in its ring.")

    def add_arguments(self, parser):
        parser.add_argument("--rekey", action="store_true", help="re-key suppression rows of the listed subjects")
        parser.add_argument("--source", default="default", help="namespace of the external ids (with --rekey)")
        parser.add_argument("--external-ids", help="file with one external id a line, or - for standard input")

    def handle(self, *args, **opts):
        if opts["rekey"]:
            if not opts["external_ids"]:
                raise CommandError("--rekey needs --external-ids FILE (one external id a line)")
            handle = sys.stdin if opts["external_ids"] == "-" else open(opts["external_ids"], encoding="utf-8")
            with handle:
                external_ids = [line.strip() for line in handle if line.strip()]
            counts = suppression_rows_rekey(source=opts["source"], external_ids=external_ids)
            self.stdout.write("re-keyed: " + ", ".join(f"{count} {store}" for store, count in counts.items()))
        for setting, ring, usage in (("SUPPRESSION_KEYS", settings.SUPPRESSION_KEYS, suppression_key_usage()),
                                     ("PSEUDONYM_KEYS", settings.PSEUDONYM_KEYS, pseudonym_key_usage())):
            ring_ids = [key_id for key_id, _ in ring]
            self.stdout.write(f"{setting} (newest first): {', '.join(ring_ids)}")
            for key_id in [*ring_ids, *sorted(set(usage) - set(ring_ids))]:
                stores = usage.get(key_id, {})
                rows = ", ".join(f"{count} {store}" for store, count in stores.items()) or "no rows"
                state = "newest" if key_id == ring_ids[0] else ("in ring" if key_id in ring_ids else "NOT IN RING")
                self.stdout.write(f"  {key_id} ({state}): {rows}")
        if problems := key_ids_missing_from_rings():
            raise CommandError("; ".join(problems) + " (put the key back in its ring)")
