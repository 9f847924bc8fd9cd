"""Customer profiles: traits, scores and embeddings (filled by the profile and training issues)."""

from django.db import models
from django.utils.translation import gettext_lazy as _
from pgvector.django import HnswIndex, VectorField

EMBEDDING_DIMENSIONS = 64


class Profile(models.Model):
    customer = models.OneToOneField("ingestion.Customer", on_delete=models.CASCADE, primary_key=True, related_name="profile")
    traits = models.JSONField(_("traits"), default=dict, blank=True)
    embedding = VectorField(_("embedding"), dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    model_version = models.ForeignKey("training.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True)
    computed_at = models.DateTimeField(_("computed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("profile")
        verbose_name_plural = _("profiles")
        indexes = [
            HnswIndex(
                name="profile_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            )
        ]
