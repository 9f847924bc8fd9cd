"""The suppression list: subjects the shop must no longer link or profile, known only by keyed tokens."""

from django.db import models
from django.utils.translation import gettext_lazy as _

from privacy.suppression_tokens import suppression_key_id


class SuppressedSubject(models.Model):
    """One suppressed subject. `token` is an HMAC of the source and external id under a key of
    the SUPPRESSION_KEYS ring (keys of their own, so the list survives erasure without pointing at
    stored data), `key_id` which one; `customer_token` is the same HMAC of the customer's
    pseudonymous key, so a check that starts from a stored customer needs no external id."""

    token = models.CharField(_("token"), max_length=64, unique=True)
    customer_token = models.CharField(_("customer token"), max_length=64, db_index=True)
    key_id = models.CharField(_("key id"), max_length=16, default=suppression_key_id, db_index=True,
                              help_text=_("The suppression key both tokens were made under"))
    reason = models.TextField(_("reason"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("suppressed subject")
        verbose_name_plural = _("suppressed subjects")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.token[:12]


class RestrictedSubject(models.Model):
    """A subject who restricted processing (profiling opt-out), known by the same keyed tokens as
    the suppression list. Kept apart from the customer row so that no later upsert of the customer
    (API or file) can set consent to profiling back: upserts read this list and keep it withdrawn."""

    token = models.CharField(_("token"), max_length=64, unique=True)
    customer_token = models.CharField(_("customer token"), max_length=64, db_index=True)
    key_id = models.CharField(_("key id"), max_length=16, default=suppression_key_id, db_index=True,
                              help_text=_("The suppression key both tokens were made under"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("restricted subject")
        verbose_name_plural = _("restricted subjects")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.token[:12]


class AuditEntry(models.Model):
    """Who did what to which privacy object, and when. Never holds personal data: subjects appear
    by request number or suppression token, customers by their database id."""

    at = models.DateTimeField(_("at"), auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("user"),
    )
    actor_label = models.CharField(_("actor"), max_length=150, help_text=_("User name, API client or system task"))
    action = models.CharField(_("action"), max_length=64, db_index=True)
    target_type = models.CharField(_("object type"), max_length=64, blank=True)
    target_id = models.CharField(_("object id"), max_length=64, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)

    class Meta:
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit log")
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="auditentry_target")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"


class RequestKind(models.TextChoices):
    ERASURE = "erasure", _("erasure")
    ACCESS_EXPORT = "access_export", _("access export")
    RESTRICTION = "restriction", _("restriction of processing (profiling opt-out)")
    UNSUPPRESSION = "unsuppression", _("lift suppression")
    RESTRICTION_LIFT = "restriction_lift", _("lift restriction of processing (consent to profiling again)")


class RequestState(models.TextChoices):
    RECEIVED = "received", _("received")
    VERIFIED = "verified", _("verified")
    EXECUTING = "executing", _("executing")
    COMPLETED = "completed", _("completed")
    PARTIALLY_FAILED = "partially_failed", _("partially failed (to be retried)")
    CLOSED = "closed", _("closed")


class PrivacyRequest(models.Model):
    """A data subject's request. The subject is known by its suppression token (keyed HMAC of source
    and external id under the newest suppression key, `subject_key_id`) and, while the customer
    exists, by a link to it: the external id itself is never stored."""

    kind = models.CharField(_("kind"), max_length=16, choices=RequestKind.choices)
    state = models.CharField(_("state"), max_length=16, choices=RequestState.choices, default=RequestState.RECEIVED)
    source = models.CharField(_("source"), max_length=32, help_text=_("Namespace of the subject's external id"))
    subject_token = models.CharField(_("subject token"), max_length=64, db_index=True)
    subject_key_id = models.CharField(_("subject token key id"), max_length=16, default=suppression_key_id)
    subject_encrypted = models.BinaryField(
        null=True, editable=False,
        help_text="The external id, encrypted, kept only until the request is executed (erasure must find it in raw rows)",
    )
    customer = models.ForeignKey(
        "ingestion.Customer", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("customer"), help_text=_("Until erasure removes it"),
        db_constraint=False,  # requests stay on a Citus coordinator; customers are sharded (pipeline.sharding)
    )
    note = models.TextField(_("note"), blank=True, help_text=_("No personal data"))
    filed_by = models.CharField(_("filed by"), max_length=150)
    verified_by = models.CharField(_("verified by"), max_length=150, blank=True)
    executed_by = models.CharField(_("executed by"), max_length=150, blank=True)
    closed_by = models.CharField(_("closed by"), max_length=150, blank=True)
    created_at = models.DateTimeField(_("received at"), auto_now_add=True)
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    executed_at = models.DateTimeField(_("executed at"), null=True, blank=True)
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)
    closed_at = models.DateTimeField(_("closed at"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    error = models.TextField(_("error"), blank=True)
    receipt = models.JSONField(
        _("receipt"), default=dict, blank=True,
        help_text=_("Per store: rows removed and when; the suppression token. No personal data."),
    )
    export_path = models.CharField(_("export file"), max_length=1024, blank=True, editable=False)
    export_expires_at = models.DateTimeField(_("export expires at"), null=True, blank=True)

    class Meta:
        verbose_name = _("privacy request")
        verbose_name_plural = _("privacy requests")
        ordering = ["-created_at", "-id"]
        permissions = [("execute_privacyrequest", _("Can verify and execute privacy requests"))]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.state}"


class ErasureLedger(models.Model):
    """The unlearning ledger: one row per completed erasure, with the model versions that had been
    trained on the subject's data and the deadline by which they must be retired (README,
    "Unlearning policy"). No subject identifier beyond the request number."""

    request = models.OneToOneField(PrivacyRequest, on_delete=models.PROTECT, related_name="ledger")
    erased_at = models.DateTimeField(_("erased at"))
    model_versions = models.JSONField(_("model versions trained on the subject"), default=list)
    retire_by = models.DateTimeField(_("retire those versions by"))
    retired_at = models.DateTimeField(_("versions retired at"), null=True, blank=True)

    class Meta:
        verbose_name = _("erasure ledger entry")
        verbose_name_plural = _("erasure ledger")
        ordering = ["-erased_at"]
