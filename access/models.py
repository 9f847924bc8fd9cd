"""API tokens for client apps: stored hashed, scoped, expiring, revocable."""

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Scope(models.TextChoices):
    EVENTS_WRITE = "events:write", _("Write events, customers and items")
    PROFILES_READ = "profiles:read", _("Read profiles")
    SIMILARITY_READ = "similarity:read", _("Similarity search")
    SEGMENTS_WRITE = "segments:write", _("Manage segments")
    SEGMENTS_EXACT = "segments:exact", _("Exact segment sizes, trends and member lists")
    COMPLIANCE = "compliance", _("Privacy requests")


class ApiToken(models.Model):
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = ArrayField(models.CharField(max_length=32, choices=Scope.choices), default=list, verbose_name=_("scopes"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(_("expires at"), help_text=_("The token is refused from this moment on"))
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(
        _("requests per minute"), null=True, blank=True,
        help_text=_("Throttle for this client; empty means the default (API_THROTTLE_PER_MINUTE)"),
    )

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class PrivacyBudgetSpend(models.Model):
    """Epsilon one token spent on one differentially private release. The sum over the last
    DP_BUDGET_WINDOW_DAYS may not pass DP_TOKEN_BUDGET (access.services.api_token_privacy_spend)."""

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="privacy_spends")
    epsilon = models.FloatField(_("epsilon"))
    spent_at = models.DateTimeField(_("spent at"), default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("privacy budget spend")
        verbose_name_plural = _("privacy budget spends")
