"""Model registry: training runs (what was trained on what, how it went) and the model versions
they produce (artifact, checksum, metrics, which one is active)."""

from django.conf import settings
from django.db import models
from pgvector.django import HnswIndex, VectorField
from django.utils.translation import gettext_lazy as _

# Width of a learned customer embedding: the encoder's output, and the profile's embedding column
# (profiles.models) is declared with it.
EMBEDDING_DIMENSIONS = 64


class RunStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")


class TrainingRun(models.Model):
    arch = models.CharField(_("architecture"), max_length=16)
    config = models.JSONField(_("configuration"), default=dict, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    device = models.CharField(_("device"), max_length=16, blank=True)
    dataset = models.JSONField(_("dataset snapshot"), default=dict, blank=True, help_text=_("Sizes and the time it was read"))
    history = models.JSONField(_("per-epoch loss and metrics"), default=list, blank=True)
    metrics = models.JSONField(_("test metrics"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, verbose_name=_("started by")
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last progress at"), null=True, blank=True,
                                        help_text=_("Start and each epoch; the dashboard shows a run silent too long as stuck"))

    class Meta:
        verbose_name = _("training run")
        verbose_name_plural = _("training runs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.arch} {self.status}"

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class ModelVersion(models.Model):
    name = models.CharField(_("name"), max_length=64)
    run = models.OneToOneField(
        TrainingRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="model_version", verbose_name=_("training run")
    )
    artifact_path = models.CharField(_("artifact"), max_length=1024, blank=True)
    artifact_sha256 = models.CharField(_("artifact checksum"), max_length=64, blank=True)
    item_ids = models.JSONField(_("item vocabulary"), default=list, blank=True, help_text=_("Item id of each index 1…n"))
    is_active = models.BooleanField(_("active"), default=False)
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    gate = models.JSONField(_("activation gate"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    activated_at = models.DateTimeField(_("activated at"), null=True, blank=True)

    class Meta:
        verbose_name = _("model version")
        verbose_name_plural = _("model versions")
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=models.Q(is_active=True), name="modelversion_one_active")
        ]

    def __str__(self) -> str:
        return f"{self.name} #{self.pk}"


class ItemEmbedding(models.Model):
    """An item's vector under one model version: what customer embeddings of that version are
    scored against for recommendations. Items the model never saw in training have a vector only
    when the model reads item content (title, brand, categories)."""

    item = models.ForeignKey("ingestion.Item", on_delete=models.CASCADE, related_name="embeddings", verbose_name=_("item"))
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="item_embeddings",
                                      verbose_name=_("model version"))
    embedding = VectorField(_("embedding"), dimensions=64)
    from_content_only = models.BooleanField(
        _("from content only"), default=False, help_text=_("The item had no events in training: its vector comes from its text")
    )

    class Meta:
        verbose_name = _("item embedding")
        verbose_name_plural = _("item embeddings")
        constraints = [models.UniqueConstraint(fields=["model_version", "item"], name="itemembedding_one_per_version")]
        indexes = [
            HnswIndex(name="itemembedding_hnsw", fields=["embedding"], m=16, ef_construction=64, opclasses=["vector_ip_ops"]),
        ]

    def __str__(self) -> str:
        return f"item {self.item_id} @ version {self.model_version_id}"
