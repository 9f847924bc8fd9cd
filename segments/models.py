"""Marketing audiences: rule segments (a filter over traits), cluster segments (k-means over
embeddings) and lookalike segments (expansion of a seed). Membership is materialised, so listing
and exporting members, and filtering similarity search by segment, are plain index reads."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class SegmentKind(models.TextChoices):
    RULE = "rule", _("rule")
    CLUSTER = "cluster", _("cluster")
    LOOKALIKE = "lookalike", _("lookalike")


class SegmentStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    READY = "ready", _("ready")
    FAILED = "failed", _("failed")


class Segment(models.Model):
    name = models.CharField(_("name"), max_length=200)
    kind = models.CharField(_("kind"), max_length=16, choices=SegmentKind.choices)
    rule = models.TextField(_("rule"), blank=True, help_text=_("Rule segments: the filter, in the segment rule language"))
    definition = models.JSONField(
        _("definition"), default=dict, blank=True,
        help_text=_("Cluster: clustering id, index, centroid, space. Lookalike: seed customers, size, method, space."),
    )
    description = models.JSONField(
        _("description"), default=dict, blank=True, help_text=_("Top categories and RFM medians of the members"),
    )
    status = models.CharField(_("status"), max_length=16, choices=SegmentStatus.choices, default=SegmentStatus.PENDING)
    size = models.PositiveIntegerField(_("members"), default=0)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("created by"),
    )
    created_by_token = models.ForeignKey(
        "access.ApiToken", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("created by API token"), help_text=_("Counts toward the token's segment limit"),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    refreshed_at = models.DateTimeField(_("refreshed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("segment")
        verbose_name_plural = _("segments")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    """Sharded with its customer: the database's primary key is (customer_id, id) (migration 0003)."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    customer = models.ForeignKey("ingestion.Customer", on_delete=models.CASCADE, related_name="segment_memberships")
    score = models.FloatField(_("score"), null=True, blank=True, help_text=_("Similarity to the seed or the centroid"))
    added_at = models.DateTimeField(_("member since"), auto_now_add=True)

    class Meta:
        verbose_name = _("segment member")
        verbose_name_plural = _("segment members")
        constraints = [models.UniqueConstraint(fields=["segment", "customer"], name="segmentmembership_unique")]
        indexes = [models.Index(fields=["customer"], name="segmentmembership_customer")]


class SegmentSnapshot(models.Model):
    """The segment's size after each refresh: its trend."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="snapshots")
    size = models.PositiveIntegerField(_("members"))
    taken_at = models.DateTimeField(_("taken at"), auto_now_add=True)

    class Meta:
        verbose_name = _("segment size snapshot")
        verbose_name_plural = _("segment size snapshots")
        ordering = ["segment", "taken_at"]
