"""Customer profiles: fitted feature sets, one fused profile per customer, build runs and the
identity-merge journal."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils.translation import gettext_lazy as _
from pgvector.django import HnswIndex, VectorField

from config.model_fields import PipelineJSONField
from training.models import EMBEDDING_DIMENSIONS

FEATURE_VECTOR_DIMENSIONS = 16
FUSED_DIMENSIONS = FEATURE_VECTOR_DIMENSIONS + EMBEDDING_DIMENSIONS


class FeatureSet(models.Model):
    """One fitted version of the preprocessing pipeline (imputation → standardisation → PCA) with
    the population statistics the labels and explanations use, and its feature report. Incremental
    refreshes reuse the active version unchanged, so profiles of one version are comparable."""

    version = models.PositiveIntegerField(_("version"), unique=True)
    feature_names = ArrayField(models.CharField(max_length=64), verbose_name=_("features in the vector"))
    pipeline = models.BinaryField(_("fitted pipeline (joblib)"), editable=False)
    # an HMAC-SHA256 keyed from SECRET_KEY since migration 0005 (profiles.feature_sets); the column kept its name
    pipeline_sha256 = models.CharField(_("pipeline signature"), max_length=64, editable=False)
    population = PipelineJSONField(_("population statistics"), default=dict, blank=True)
    report = models.JSONField(_("feature report"), default=dict, blank=True)
    fusion_weight = models.FloatField(
        _("fusion weight of the traits vector"), default=1.0,
        help_text=_("w in fused = [√w·traits, √(1−w)·embedding]; 1 until a learned embedding exists"),
    )
    customers_fitted = models.PositiveIntegerField(_("customers fitted on"), default=0)
    is_active = models.BooleanField(_("active"), default=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("feature set")
        verbose_name_plural = _("feature sets")
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=models.Q(is_active=True), name="featureset_one_active")
        ]

    def __str__(self) -> str:
        return f"v{self.version}"


class ValueTier(models.TextChoices):
    NONE = "none", _("no purchases")
    LOW = "low", _("low")
    MEDIUM = "medium", _("medium")
    HIGH = "high", _("high")


class LifecycleStage(models.TextChoices):
    NEW = "new", _("new")
    ACTIVE = "active", _("active")
    AT_RISK = "at_risk", _("at risk")
    LAPSED = "lapsed", _("lapsed")
    DORMANT = "dormant", _("no activity yet")


class Profile(models.Model):
    """A customer's fused profile: named traits, derived labels, the standardised traits vector,
    the learned embedding (with its model version) and their fusion.

    `snapshot_at` is when the events it was built from were read; a write never replaces a
    profile with a later snapshot, so a slow refresh cannot overwrite a newer one.
    """

    customer = models.OneToOneField("ingestion.Customer", on_delete=models.CASCADE, primary_key=True, related_name="profile")
    traits = PipelineJSONField(_("traits"), default=dict, blank=True)
    explanation = PipelineJSONField(_("explanation"), default=dict, blank=True)
    value_tier = models.CharField(_("value tier"), max_length=8, choices=ValueTier.choices, default=ValueTier.NONE)
    lifecycle_stage = models.CharField(
        _("lifecycle stage"), max_length=8, choices=LifecycleStage.choices, default=LifecycleStage.DORMANT
    )
    feature_set = models.ForeignKey(FeatureSet, on_delete=models.PROTECT, related_name="profiles", verbose_name=_("feature set"))
    feature_vector = VectorField(_("standardised traits vector"), dimensions=FEATURE_VECTOR_DIMENSIONS, null=True, blank=True)
    embedding = VectorField(_("learned embedding"), dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    model_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, verbose_name=_("embedding model version")
    )
    fused = VectorField(_("fused vector"), dimensions=FUSED_DIMENSIONS, null=True, blank=True)
    events_included = models.BigIntegerField(_("events included"), default=0)
    last_event_at = models.DateTimeField(_("last event at"), null=True, blank=True)
    watermark = models.DateTimeField(
        _("watermark"), null=True, blank=True, help_text=_("Ingestion time of the newest event included")
    )
    snapshot_at = models.DateTimeField(_("events read at"))
    computed_at = models.DateTimeField(_("computed at"), auto_now=True)

    class Meta:
        verbose_name = _("profile")
        verbose_name_plural = _("profiles")
        indexes = [
            HnswIndex(
                name="profile_feature_vector_hnsw", fields=["feature_vector"], m=16, ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
            HnswIndex(
                name="profile_embedding_hnsw", fields=["embedding"], m=16, ef_construction=128,
                opclasses=["vector_cosine_ops"],
            ),
            HnswIndex(
                name="profile_fused_hnsw", fields=["fused"], m=16, ef_construction=128, opclasses=["vector_cosine_ops"]
            ),
            models.Index(fields=["value_tier", "lifecycle_stage"], name="profile_labels"),
        ]

    def __str__(self) -> str:
        return str(self.customer_id)


class CustomerValue(models.Model):
    """Each customer's net spend (purchases minus refunds) when the last feature set was fitted:
    what the social features read as a neighbour's value, one key lookup per neighbour instead of
    re-aggregating every neighbour's events (measured 4.7 s per 5,000 customers that way)."""

    customer = models.OneToOneField("ingestion.Customer", on_delete=models.CASCADE, primary_key=True)
    net_value = models.FloatField(_("net spend"))

    class Meta:
        verbose_name = _("customer value snapshot")
        verbose_name_plural = _("customer value snapshots")


class BuildStatus(models.TextChoices):
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")


class ProfileBuild(models.Model):
    """One batch build: fit a feature set, then profile every customer chunk by chunk."""

    feature_set = models.ForeignKey(FeatureSet, on_delete=models.SET_NULL, null=True, blank=True, verbose_name=_("feature set"))
    status = models.CharField(_("status"), max_length=16, choices=BuildStatus.choices, default=BuildStatus.RUNNING)
    chunks_total = models.PositiveIntegerField(_("chunks"), default=0)
    chunks_done = models.PositiveIntegerField(_("chunks done"), default=0)
    done_chunks = ArrayField(models.PositiveIntegerField(), default=list, blank=True, editable=False)
    profiles_written = models.BigIntegerField(_("profiles written"), default=0)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, verbose_name=_("started by")
    )
    started_at = models.DateTimeField(_("started at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last progress at"), null=True, blank=True,
                                        help_text=_("Start and each chunk done; the dashboard shows a build silent too long as stuck"))

    class Meta:
        verbose_name = _("profile build")
        verbose_name_plural = _("profile builds")
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.status}"

    @property
    def progress(self) -> float:
        return self.chunks_done / self.chunks_total if self.chunks_total else 0.0


class MergeMethod(models.TextChoices):
    IDENTIFY = "identify", _("identify call")
    ALIAS = "alias", _("alias call")
    MANUAL = "manual", _("manual")


class IdentityMerge(models.Model):
    """The journal of identity resolution: one customer (usually an anonymous visitor) merged into
    another, with what moved, when, why and how sure, and everything needed to undo it exactly."""

    # no database constraints to the customers: the journal stays on the coordinator of a Citus
    # cluster, which cannot hold a foreign key into a sharded table (pipeline.sharding)
    merged = models.ForeignKey(
        "ingestion.Customer", on_delete=models.CASCADE, related_name="merges_absorbed_into",
        verbose_name=_("merged customer"), db_constraint=False,
    )
    survivor = models.ForeignKey(
        "ingestion.Customer", on_delete=models.CASCADE, related_name="merges_absorbed", verbose_name=_("surviving customer"),
        db_constraint=False,
    )
    method = models.CharField(_("method"), max_length=16, choices=MergeMethod.choices)
    reason = models.TextField(_("reason"))
    confidence = models.FloatField(_("confidence"), help_text=_("0 to 1"))
    moved_event_ids = ArrayField(models.UUIDField(), default=list, blank=True, verbose_name=_("moved events"))
    moved_edges = models.JSONField(
        _("moved social edges"), default=dict, blank=True,
        help_text=_("Edges re-pointed to the survivor, and edges dropped as self-loops or duplicates"),
    )
    profile_snapshots = models.JSONField(
        _("profiles before the merge"), default=dict, blank=True,
        help_text=_("Both customers' profile rows and event counts as they were before the merge"),
    )
    created_at = models.DateTimeField(_("merged at"), auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("merged by"),
    )
    undone_at = models.DateTimeField(_("undone at"), null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("undone by"),
    )
    undo_reason = models.TextField(_("reason for undoing"), blank=True)

    class Meta:
        verbose_name = _("identity merge")
        verbose_name_plural = _("identity merges")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(confidence__gte=0, confidence__lte=1), name="identitymerge_confidence_0_1"),
            models.CheckConstraint(condition=~models.Q(merged=models.F("survivor")), name="identitymerge_not_self"),
            models.UniqueConstraint(
                fields=["merged"], condition=models.Q(undone_at__isnull=True), name="identitymerge_one_live_per_customer"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.merged_id} → {self.survivor_id}"
