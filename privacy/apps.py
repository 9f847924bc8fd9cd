from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class PrivacyConfig(AppConfig):
    name = "privacy"
    verbose_name = _("Privacy")

    def ready(self):
        from privacy import checks  # noqa: F401  registers the key-ring check
        from privacy.roles import roles_after_migrate

        # after auth has created this run's permissions (post_migrate runs per app, in app order)
        post_migrate.connect(roles_after_migrate, sender=self, dispatch_uid="privacy-roles")
