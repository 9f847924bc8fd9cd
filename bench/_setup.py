"""Shared set-up for benchmarks: a dedicated database (never the demo's), migrated and emptied."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("EMBEDDED_DATABASE_NAME", "portrait_bench")


def django_ready(empty: bool = True) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    if empty:
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE ingestion_event, ingestion_quarantinedrow, ingestion_importjob, ingestion_socialedge, "
                "ingestion_customergroundtruth, profiles_profile, profiles_profilebuild, profiles_featureset, "
                "ingestion_customer, ingestion_customerkey, ingestion_item CASCADE"
            )
