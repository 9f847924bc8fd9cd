"""The two roles of the privacy workflow, as Django groups: compliance staff verify and execute
requests and may reveal personal data; operators see the queue and the audit log, file requests,
but cannot act on them (privacy/roles.py)."""

from django.db import migrations

from privacy.roles import COMPLIANCE, OPERATORS, roles_ensure


def groups_create(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for config in apps.get_app_configs():  # permissions are otherwise created only after all migrations
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None
    roles_ensure(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


def groups_remove(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[COMPLIANCE, OPERATORS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("privacy", "0002_requests_audit"),
        ("ingestion", "0004_customer_view_pii"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(groups_create, groups_remove)]
