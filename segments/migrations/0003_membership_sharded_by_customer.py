"""Memberships in the Citus shape (ingestion 0010): primary key (customer_id, id), and a customer id
that never changes in place."""

from django.db import migrations

from ingestion.shard_shape import customer_id_fixed, primary_key_with_customer


class Migration(migrations.Migration):
    dependencies = [("segments", "0002_segment_created_by_token"), ("ingestion", "0010_customer_keys_and_event_partitions")]

    operations = [
        migrations.RunSQL(*primary_key_with_customer("segments_segmentmembership", "customer_id")),
        migrations.RunSQL(*customer_id_fixed("segments_segmentmembership", "customer_id")),
    ]
