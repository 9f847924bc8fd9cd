"""Model registry (grown by the deep-encoder issue)."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class ModelVersion(models.Model):
    name = models.CharField(_("name"), max_length=64)
    is_active = models.BooleanField(_("active"), default=False)
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("model version")
        verbose_name_plural = _("model versions")

    def __str__(self) -> str:
        return f"{self.name} #{self.pk}"
