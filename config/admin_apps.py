"""The admin app, with Portrait's site (config.admin_site, imported once apps are loaded)."""

from django.contrib.admin.apps import AdminConfig


class PortraitAdminConfig(AdminConfig):
    default_site = "config.admin_site.PortraitAdminSite"
