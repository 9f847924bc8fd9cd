from django.core.management.base import BaseCommand

from ingestion.pii import pii_reencrypt


class Command(BaseCommand):
    help = (
        "After putting a new key first in PII_ENCRYPTION_KEYS, re-encrypt all stored personal data with it; "
        "then the old key can be dropped. Safe to run again or to resume after an interruption."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=2000, help="rows per transaction (default 2000)")

    def handle(self, *args, **opts):
        def on_progress(counts):
            if opts["verbosity"] > 1:
                self.stdout.write(_counts_line(counts))

        counts = pii_reencrypt(batch_size=opts["batch_size"], on_progress=on_progress)
        self.stdout.write(self.style.SUCCESS(f"re-encrypted under the newest key: {_counts_line(counts)}"))


def _counts_line(counts: dict) -> str:
    return (f"{counts['customers']} customers and {counts['privacy_requests']} privacy requests checked, "
            f"{counts['fields_reencrypted']} fields re-encrypted")
