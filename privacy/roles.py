"""The two roles of the privacy workflow as Django groups (created by migration 0003, and again after
every migrate or flush, so a database emptied by a test or an operator still has them)."""

COMPLIANCE = "Compliance"
OPERATORS = "Operators"
COMPLIANCE_PERMISSIONS = [
    ("privacy", "privacyrequest", "view_privacyrequest"), ("privacy", "privacyrequest", "add_privacyrequest"),
    ("privacy", "privacyrequest", "execute_privacyrequest"), ("privacy", "auditentry", "view_auditentry"),
    ("privacy", "suppressedsubject", "view_suppressedsubject"), ("privacy", "erasureledger", "view_erasureledger"),
    ("ingestion", "customer", "view_customer"), ("ingestion", "customer", "view_pii"),
]
OPERATOR_PERMISSIONS = [
    ("privacy", "privacyrequest", "view_privacyrequest"), ("privacy", "privacyrequest", "add_privacyrequest"),
    ("privacy", "auditentry", "view_auditentry"), ("ingestion", "customer", "view_customer"),
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
    from django.contrib.auth.models import Group, Permission

    roles_ensure(Group, Permission)
