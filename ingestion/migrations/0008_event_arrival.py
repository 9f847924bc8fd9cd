"""Event.arrival: a bigint drawn from its own sequence, so same-instant events keep the order they
arrived in (README "Deep user encoder"). Events already stored are numbered in the order the
training read gave them until now (customer, time, event id), so no existing sequence changes."""

import django.db.models.expressions
from django.db import migrations, models

FORWARD = """
CREATE SEQUENCE ingestion_event_arrival_seq AS bigint;
ALTER TABLE ingestion_event ADD COLUMN arrival bigint;
UPDATE ingestion_event e SET arrival = o.n
FROM (SELECT event_id, row_number() OVER (ORDER BY customer_id, occurred_at, event_id) AS n FROM ingestion_event) o
WHERE e.event_id = o.event_id;
SELECT setval('ingestion_event_arrival_seq', coalesce(max(arrival), 0) + 1, false) FROM ingestion_event;
ALTER TABLE ingestion_event ALTER COLUMN arrival SET DEFAULT nextval('ingestion_event_arrival_seq'),
    ALTER COLUMN arrival SET NOT NULL;
ALTER SEQUENCE ingestion_event_arrival_seq OWNED BY ingestion_event.arrival;
"""
BACKWARD = "ALTER TABLE ingestion_event DROP COLUMN arrival"  # drops the owned sequence too


class Migration(migrations.Migration):

    dependencies = [
        ('ingestion', '0007_refresh_outbox'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD, BACKWARD)],
            state_operations=[
                migrations.AddField(
                    model_name='event',
                    name='arrival',
                    field=models.BigIntegerField(
                        db_default=django.db.models.expressions.Func(
                            django.db.models.expressions.Value('ingestion_event_arrival_seq'), function='nextval',
                            output_field=models.BigIntegerField(),
                        ),
                        editable=False, verbose_name='arrival',
                    ),
                ),
            ],
        ),
    ]
