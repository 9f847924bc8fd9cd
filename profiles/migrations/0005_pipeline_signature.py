import hashlib
import hmac

from django.conf import settings
from django.db import migrations, models
from django.utils.crypto import salted_hmac

# the same derivation as profiles.feature_sets._pipeline_signing_keys, frozen here
PIPELINE_KEY_SALT = "profiles.feature_sets.pipeline"


def pipelines_sign(apps, schema_editor):
    """Feature sets stored with an unkeyed SHA-256 are signed once, after the same check that guarded
    them until now; one whose checksum does not match stays unsigned and is refused at load."""
    key = salted_hmac(PIPELINE_KEY_SALT, "feature-set pipeline", secret=settings.SECRET_KEY).digest()
    FeatureSet = apps.get_model("profiles", "FeatureSet")
    for feature_set in FeatureSet.objects.only("pk", "pipeline", "pipeline_sha256").iterator():
        blob = bytes(feature_set.pipeline)
        if hmac.compare_digest(hashlib.sha256(blob).hexdigest(), feature_set.pipeline_sha256):
            FeatureSet.objects.filter(pk=feature_set.pk).update(
                pipeline_sha256=hmac.new(key, blob, hashlib.sha256).hexdigest()
            )


class Migration(migrations.Migration):

    dependencies = [
        ("profiles", "0004_customer_value"),
    ]

    operations = [
        migrations.AlterField(
            model_name="featureset",
            name="pipeline_sha256",
            field=models.CharField(editable=False, max_length=64, verbose_name="pipeline signature"),
        ),
        migrations.RunPython(pipelines_sign, migrations.RunPython.noop),
    ]
