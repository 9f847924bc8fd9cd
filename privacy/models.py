"""The suppression list: subjects the shop must no longer link or profile, known only by keyed tokens."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class SuppressedSubject(models.Model):
    """One suppressed subject. `token` is an HMAC of the source and external id under
    SUPPRESSION_KEY (a key of its own, so the list survives erasure without pointing at stored
    data); `customer_token` is the same HMAC of the customer's pseudonymous key, so a check that
    starts from a stored customer needs no external id."""

    token = models.CharField(_("token"), max_length=64, unique=True)
    customer_token = models.CharField(_("customer token"), max_length=64, db_index=True)
    reason = models.TextField(_("reason"))
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("suppressed subject")
        verbose_name_plural = _("suppressed subjects")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.token[:12]
