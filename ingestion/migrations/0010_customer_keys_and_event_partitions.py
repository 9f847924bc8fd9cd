"""The Citus shape (issue 16, README "Scale-out"): pseudonymous keys unique through their own
lookup table instead of a unique index on the customer table; no database constraints between
customers of different shards; the event table hash-partitioned by customer with the primary key
(customer_id, event_id); customer ids that never change in place."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from ingestion.shard_shape import (
    EVENT_TABLE_SINGLE, REFUSE_FUNCTION, customer_id_fixed, event_table_partitioned, primary_key_with_customer,
)

FIXED = [customer_id_fixed("ingestion_customer", "id"), customer_id_fixed("ingestion_event", "customer_id"),
         customer_id_fixed("ingestion_socialedge", "source_customer_id"),
         customer_id_fixed("ingestion_customergroundtruth", "customer_id")]
EDGE_KEY = primary_key_with_customer("ingestion_socialedge", "source_customer_id")


class Migration(migrations.Migration):

    dependencies = [
        ('ingestion', '0009_import_chunk'),
    ]

    operations = [
        migrations.AlterField(
            model_name='customer',
            name='key',
            field=models.CharField(db_index=True, help_text='HMAC-SHA256 of source and external id', max_length=64, verbose_name='pseudonymous key'),
        ),
        migrations.AlterField(
            model_name='customer',
            name='merged_into',
            field=models.ForeignKey(blank=True, db_constraint=False, help_text="Set while this identity's events belong to another customer", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='merged_identities', to='ingestion.customer', verbose_name='merged into'),
        ),
        migrations.AlterField(
            model_name='socialedge',
            name='target_customer',
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='edges_in', to='ingestion.customer'),
        ),
        migrations.CreateModel(
            name='CustomerKey',
            fields=[
                ('key', models.CharField(max_length=64, primary_key=True, serialize=False, verbose_name='pseudonymous key')),
                ('customer', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='key_entries', to='ingestion.customer', verbose_name='customer')),
            ],
            options={
                'verbose_name': 'customer key',
                'verbose_name_plural': 'customer keys',
            },
        ),
        migrations.RunSQL(
            "INSERT INTO ingestion_customerkey (key, customer_id) SELECT key, id FROM ingestion_customer",
            "UPDATE ingestion_customer c SET key = k.key FROM ingestion_customerkey k WHERE k.customer_id = c.id",
        ),
        migrations.RunSQL(event_table_partitioned(settings.EVENT_PARTITIONS), EVENT_TABLE_SINGLE),
        migrations.RunSQL(*EDGE_KEY),
        migrations.RunSQL(REFUSE_FUNCTION, "DROP FUNCTION IF EXISTS portrait_refuse_customer_id_update()"),
        *(migrations.RunSQL(forward, reverse) for forward, reverse in FIXED),
    ]
