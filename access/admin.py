from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from access import services
from access.models import ApiToken, Scope

MAX_LIFETIME_DAYS = 366


class ApiTokenCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, label=_("scopes"),
        help_text=_("A token with events:write is also the write key of a shop's Segment or RudderStack SDK: "
                    "set the SDK's host to this server and its write key to the token."),
    )
    lifetime_days = forms.IntegerField(
        label=_("valid for (days)"), min_value=1, max_value=MAX_LIFETIME_DAYS,
        initial=lambda: settings.API_TOKEN_LIFETIME_DAYS,
    )

    class Meta:
        model = ApiToken
        fields = ("name", "scopes", "lifetime_days", "requests_per_minute")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "scopes", "requests_per_minute", "created_at", "last_used_at", "expires_at",
                    "revoked_at")
    list_filter = ("revoked_at", "expires_at")
    readonly_fields = ("name", "prefix", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at")
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else ()

    def get_fields(self, request, obj=None):
        return ("name", "scopes", "lifetime_days", "requests_per_minute") if obj is None else (*self.readonly_fields, "requests_per_minute")

    def save_model(self, request, obj, form, change):
        if change:
            services.api_token_rate_set(token=obj, requests_per_minute=form.cleaned_data.get("requests_per_minute"))
            return
        token, raw = services.api_token_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
            requests_per_minute=form.cleaned_data.get("requests_per_minute"),
            lifetime=timedelta(days=form.cleaned_data["lifetime_days"]),
        )
        vars(obj).update(vars(token))
        self.message_user(
            request,
            _("Token created. Copy it now, it is not shown again: %(token)s") % {"token": raw},
            messages.WARNING,
        )

    @admin.action(description=_("Revoke selected tokens"))
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            services.api_token_revoke(token=token)
        self.message_user(request, _("Revoked."), messages.SUCCESS)
