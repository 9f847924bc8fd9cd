import django.db.models
from django.db import migrations

import ingestion.pseudonyms


class Migration(migrations.Migration):
    """Customers made before key ids were made under the single PSEUDONYM_KEY, which is the key id
    "k1" of the ring (config.env.keyring): they are recorded as such, whatever the ring says now."""

    dependencies = [("ingestion", "0005_quarantined_rows_encrypted")]

    operations = [
        migrations.AddField(
            model_name="customer", name="key_id",
            field=django.db.models.CharField(default="k1", max_length=16, verbose_name="key id",
                                             help_text="The pseudonym key the key was made under"),
        ),
        migrations.AlterField(
            model_name="customer", name="key_id",
            field=django.db.models.CharField(default=ingestion.pseudonyms.pseudonym_key_id, max_length=16,
                                             verbose_name="key id",
                                             help_text="The pseudonym key the key was made under"),
        ),
    ]
