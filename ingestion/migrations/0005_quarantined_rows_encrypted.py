import django.contrib.postgres.fields
import django.contrib.postgres.indexes
from django.db import migrations, models


def rows_encrypt(apps, schema_editor):
    """Rows quarantined before this migration: encrypted in place (their subjects unknown, erasure
    finds them by decrypting)."""
    from ingestion.pseudonyms import pii_encrypt_bytes

    QuarantinedRow = apps.get_model("ingestion", "QuarantinedRow")
    for row in QuarantinedRow.objects.only("pk", "raw").iterator(chunk_size=5000):
        QuarantinedRow.objects.filter(pk=row.pk).update(raw_encrypted=pii_encrypt_bytes(row.raw.encode()))


class Migration(migrations.Migration):

    dependencies = [
        ("ingestion", "0004_customer_view_pii"),
    ]

    operations = [
        migrations.AddField(
            model_name="quarantinedrow", name="raw_encrypted", field=models.BinaryField(editable=False, null=True),
        ),
        migrations.AddField(
            model_name="quarantinedrow",
            name="subject_tokens",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(max_length=64), blank=True, default=list, editable=False, size=None,
            ),
        ),
        migrations.RunPython(rows_encrypt, migrations.RunPython.noop),
        migrations.RemoveField(model_name="quarantinedrow", name="raw"),
        migrations.AlterField(model_name="quarantinedrow", name="raw_encrypted", field=models.BinaryField(editable=False)),
        migrations.AlterField(
            model_name="quarantinedrow", name="created_at", field=models.DateTimeField(auto_now_add=True, db_index=True),
        ),
        migrations.AddIndex(
            model_name="quarantinedrow",
            index=django.contrib.postgres.indexes.GinIndex(fields=["subject_tokens"], name="quarantinedrow_subjects"),
        ),
    ]
