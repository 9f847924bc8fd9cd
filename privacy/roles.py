"""The two roles of the privacy workflow as Django groups (created by migration 0003, and again after
every migrate or flush, so a database emptied by a test or an operator still has them)."""

COMPLIANCE = "Compliance"
OPERATORS = "Operators"
COMPLIANCE_PERMISSIONS = [
    ("privacy", "privacyrequest", "view_privacyrequest"), ("privacy", "privacyrequest", "add_privacyrequest"),
    ("privacy", "privacyrequest", "execute_privacyrequest"), ("privacy", "auditentry", "view_auditentry"),
    ("privacy", "suppressedsubject", "view_suppressedsubject"), ("privacy", "erasureledger", "view_erasureledger"),
    ("ingestion", "customer", "view_customer"), ("ingestion", "customer", "view_pii"),
    # rejected import rows in clear (Operators see them masked)
    ("ingestion", "importjob", "view_importjob"), ("ingestion", "quarantinedrow", "view_quarantinedrow"),
]
# Operators run the product from the admin: imports (with their rejects), profiles and builds,
# segments, training and activation, the CLV model and demand; they file privacy requests but never
# verify or execute them, and they see personal data only masked.
OPERATOR_PERMISSIONS = [
    ("privacy", "privacyrequest", "view_privacyrequest"), ("privacy", "privacyrequest", "add_privacyrequest"),
    ("privacy", "auditentry", "view_auditentry"), ("ingestion", "customer", "view_customer"),
    ("ingestion", "importjob", "view_importjob"), ("ingestion", "importjob", "add_importjob"),
    ("ingestion", "quarantinedrow", "view_quarantinedrow"), ("ingestion", "item", "view_item"),
    ("ingestion", "event", "view_event"), ("ingestion", "socialedge", "view_socialedge"),
    ("profiles", "profile", "view_profile"), ("profiles", "featureset", "view_featureset"),
    ("profiles", "profilebuild", "view_profilebuild"), ("profiles", "identitymerge", "view_identitymerge"),
    ("segments", "segment", "view_segment"), ("segments", "segment", "add_segment"),
    ("segments", "segment", "change_segment"), ("segments", "segment", "delete_segment"),
    ("segments", "segmentsnapshot", "view_segmentsnapshot"),
    ("training", "trainingrun", "view_trainingrun"), ("training", "trainingrun", "add_trainingrun"),
    ("training", "modelversion", "view_modelversion"), ("training", "itemembedding", "view_itemembedding"),
    ("crm", "clvfit", "view_clvfit"), ("crm", "clvfit", "add_clvfit"),
    ("crm", "customerprediction", "view_customerprediction"),
    ("crm", "demandforecast", "view_demandforecast"), ("crm", "categorydemand", "view_categorydemand"),
    ("pipeline", "deadletter", "view_deadletter"), ("pipeline", "deadletter", "delete_deadletter"),
    ("ingestion", "refreshoutbox", "view_refreshoutbox"),
]


def roles_ensure(group_model, permission_model) -> None:
    for name, wanted in ((COMPLIANCE, COMPLIANCE_PERMISSIONS), (OPERATORS, OPERATOR_PERMISSIONS)):
        group, _ = group_model.objects.get_or_create(name=name)
        for app_label, model, codename in wanted:
            permission = permission_model.objects.filter(
                content_type__app_label=app_label, content_type__model=model, codename=codename,
            ).first()
            if permission is not None:
                group.permissions.add(permission)


def roles_after_migrate(sender, **kwargs) -> None:
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission

    # post_migrate reaches apps in INSTALLED_APPS order: create the permissions of the apps after
    # this one now, or a first migrate would leave the roles without them
    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=kwargs.get("using", "default"))
    roles_ensure(Group, Permission)
