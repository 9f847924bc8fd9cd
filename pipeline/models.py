"""Tasks given up on: the dead letters operators see in the admin."""

from django.db import models
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _


class DeadLetter(models.Model):
    """A Celery task that failed for good, or was delivered more than TASK_MAX_DELIVERIES times
    without finishing (config.celery.PortraitTask): it is not run again by itself."""

    task_id = models.CharField(_("task id"), max_length=64, unique=True)
    task_name = models.CharField(_("task"), max_length=200, db_index=True)
    args = models.JSONField(_("arguments"), default=list, blank=True)
    kwargs = models.JSONField(_("keyword arguments"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    deliveries = models.PositiveIntegerField(_("deliveries"), default=0)
    created_at = models.DateTimeField(_("dead-lettered at"), db_default=Now(), editable=False, db_index=True)

    class Meta:
        verbose_name = _("dead-lettered task")
        verbose_name_plural = _("dead-lettered tasks")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}]"
