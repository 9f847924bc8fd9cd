"""The admin site of Portrait: Django's, with a dashboard of the store above the app list, and a
second factor (TOTP, django-otp) for whoever enrolled one, or for the Compliance group when
ADMIN_COMPLIANCE_TOTP_REQUIRED."""

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.utils.translation import gettext_lazy as _
from django_otp import devices_for_user
from django_otp.forms import OTPAuthenticationFormMixin
from django_otp.plugins.otp_totp.models import TOTPDevice

from config.dashboard import dashboard_summary
from privacy.roles import COMPLIANCE


def second_factor_required(user) -> bool:
    """Whether `user` must prove a TOTP code: anyone with a confirmed device, and the Compliance
    group (who can reveal PII and execute erasures) when ADMIN_COMPLIANCE_TOTP_REQUIRED."""
    if not user.is_authenticated:
        return False
    if next(devices_for_user(user, confirmed=True), None) is not None:
        return True
    return settings.ADMIN_COMPLIANCE_TOTP_REQUIRED and user.groups.filter(name=COMPLIANCE).exists()


class PortraitLoginForm(OTPAuthenticationFormMixin, AdminAuthenticationForm):
    otp_token = forms.CharField(
        label=_("Authenticator code"), required=False, max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text=_("Only if you enrolled an authenticator app."),
    )

    def _chosen_device(self, user):
        # the form has no device picker: a user's code is checked against their (first) authenticator
        return super()._chosen_device(user) or TOTPDevice.objects.devices_for_user(user, confirmed=True).first()

    def clean(self):
        cleaned_data = super().clean()
        user = self.get_user()
        if user is not None and second_factor_required(user):
            self.clean_otp(user)  # a ValidationError without a valid code; the login signal marks the session verified
        return cleaned_data


class PortraitAdminSite(admin.AdminSite):
    login_form = PortraitLoginForm

    def has_permission(self, request):
        if not super().has_permission(request):
            return False
        return not second_factor_required(request.user) or request.user.is_verified()

    def index(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "dashboard": dashboard_summary()}
        return super().index(request, extra_context)

