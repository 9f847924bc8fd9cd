import django.db.models
from django.db import migrations

import privacy.suppression_tokens

HELP = "The suppression key both tokens were made under"
NEWEST = privacy.suppression_tokens.suppression_key_id


def _key_id(default, **options):
    return django.db.models.CharField(default=default, max_length=16, **options)


class Migration(migrations.Migration):
    """Tokens made before key ids were made under the single SUPPRESSION_KEY, which is the key id
    "k1" of the ring (config.env.keyring): they are recorded as such, whatever the ring says now."""

    dependencies = [("privacy", "0004_restricted_subjects")]

    operations = [
        migrations.AddField("suppressedsubject", "key_id",
                            _key_id("k1", db_index=True, verbose_name="key id", help_text=HELP)),
        migrations.AlterField("suppressedsubject", "key_id",
                              _key_id(NEWEST, db_index=True, verbose_name="key id", help_text=HELP)),
        migrations.AddField("restrictedsubject", "key_id",
                            _key_id("k1", db_index=True, verbose_name="key id", help_text=HELP)),
        migrations.AlterField("restrictedsubject", "key_id",
                              _key_id(NEWEST, db_index=True, verbose_name="key id", help_text=HELP)),
        migrations.AddField("privacyrequest", "subject_key_id", _key_id("k1", verbose_name="subject token key id")),
        migrations.AlterField("privacyrequest", "subject_key_id", _key_id(NEWEST, verbose_name="subject token key id")),
    ]
