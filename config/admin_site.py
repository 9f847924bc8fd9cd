"""The admin site of Portrait: Django's, with a dashboard of the store above the app list."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig

from config.dashboard import dashboard_summary


class PortraitAdminSite(admin.AdminSite):
    def index(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "dashboard": dashboard_summary()}
        return super().index(request, extra_context)


class PortraitAdminConfig(AdminConfig):
    default_site = "config.admin_site.PortraitAdminSite"
