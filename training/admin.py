from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from training import services
from training.models import ItemEmbedding, ModelVersion, RunStatus, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("__str__", "arch", "status", "device", "epochs", "test_ndcg", "created_at", "finished_at")
    list_filter = ("status", "arch")
    readonly_fields = ("arch", "status", "device", "config", "dataset", "history", "metrics", "error", "created_by",
                       "created_at", "started_at", "finished_at")
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("epochs"))
    def epochs(self, obj):
        return len(obj.history)

    @admin.display(description=_("test NDCG@10"))
    def test_ndcg(self, obj):
        value = obj.metrics.get("ndcg@10")
        return "—" if value is None else f"{value:.4f}"

    def get_urls(self):
        return [
            path("start/", self.admin_site.admin_view(self.start_view), name="training_trainingrun_start"),
            *super().get_urls(),
        ]

    def start_view(self, request):
        """Retrain on demand: queue a run on the training queue with the default configuration."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("training.add_trainingrun"):
            messages.error(request, _("You may not start training runs."))
            return HttpResponseRedirect(reverse("admin:training_trainingrun_changelist"))
        from config.celery import BrokerUnavailable, broker_check

        try:
            broker_check()
        except BrokerUnavailable as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(reverse("admin:training_trainingrun_changelist"))
        run = services.training_run_start(user=request.user)
        if run is None:
            messages.warning(request, _("A training run is already pending or running."))
        else:
            messages.success(request, _("Training run #%(run)s queued; its progress appears below.") % {"run": run.pk})
        return HttpResponseRedirect(reverse("admin:training_trainingrun_changelist"))

    def changelist_view(self, request, extra_context=None):
        busy = TrainingRun.objects.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING]).exists()
        return super().changelist_view(request, {**(extra_context or {}), "run_busy": busy})


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "valid_ndcg", "test_ndcg", "gate_passed", "run", "created_at", "activated_at")
    list_filter = ("is_active",)
    readonly_fields = ("name", "run", "is_active", "metrics", "gate", "artifact_path", "artifact_sha256", "created_at",
                       "activated_at")
    fields = readonly_fields
    actions = ("activate_selected",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("valid NDCG@10"))
    def valid_ndcg(self, obj):
        value = obj.metrics.get("valid", {}).get("ndcg@10")
        return "—" if value is None else f"{value:.4f}"

    @admin.display(description=_("test NDCG@10"))
    def test_ndcg(self, obj):
        value = obj.metrics.get("test", {}).get("ndcg@10")
        return "—" if value is None else f"{value:.4f}"

    @admin.display(description=_("gate"), boolean=True)
    def gate_passed(self, obj):
        return obj.gate.get("passed")

    @admin.action(description=_("Activate the selected version (roll back or forward)"), permissions=["activate"])
    def activate_selected(self, request, queryset):
        """An operator's decision overrides the gate (rolling back to an older version is the point);
        a worker re-encodes the embeddings with that version, switches, and rebuilds the profiles."""
        if queryset.count() != 1:
            messages.error(request, _("Select exactly one model version."))
            return
        version = queryset.get()
        from training.tasks import model_version_activate_task

        transaction.on_commit(lambda: model_version_activate_task.delay(version.pk))
        messages.success(request, _("Version %(name)s is being activated: its embeddings are re-encoded in the background.")
                         % {"name": version})

    def has_activate_permission(self, request):
        return request.user.has_perm("training.add_trainingrun")


@admin.register(ItemEmbedding)
class ItemEmbeddingAdmin(admin.ModelAdmin):
    list_display = ("item", "model_version", "from_content_only", "norm")
    list_filter = ("model_version", "from_content_only")
    list_select_related = ("item", "model_version")
    readonly_fields = ("item", "model_version", "from_content_only")
    exclude = ("embedding",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("norm"))
    def norm(self, obj):
        import numpy as np

        return format_html("{}", f"{float(np.linalg.norm(obj.embedding)):.3f}")
