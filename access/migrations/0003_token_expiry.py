from datetime import timedelta

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def existing_tokens_expire(apps, schema_editor):
    # tokens made before expiry existed get one full lifetime from now, not an immediate lock-out
    apps.get_model("access", "ApiToken").objects.filter(expires_at__isnull=True).update(
        expires_at=timezone.now() + timedelta(days=settings.API_TOKEN_LIFETIME_DAYS)
    )


class Migration(migrations.Migration):

    dependencies = [
        ("access", "0002_token_rate_limit"),
    ]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(null=True, verbose_name="expires at"),
        ),
        migrations.RunPython(existing_tokens_expire, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="apitoken",
            name="expires_at",
            field=models.DateTimeField(help_text="The token is refused from this moment on", verbose_name="expires at"),
        ),
    ]
