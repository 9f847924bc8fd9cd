"""A prediction's customer id never changes in place (the Citus shape, ingestion 0010)."""

from django.db import migrations

from ingestion.shard_shape import customer_id_fixed


class Migration(migrations.Migration):
    dependencies = [("crm", "0001_initial"), ("ingestion", "0010_customer_keys_and_event_partitions")]

    operations = [migrations.RunSQL(*customer_id_fixed("crm_customerprediction", "customer_id"))]
