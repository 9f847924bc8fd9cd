from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from config.charts import line_chart
from training import selectors
from training.tasks import model_version_activation_queue, training_run_queue
from training.models import ItemEmbedding, ModelVersion, RunStatus, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("__str__", "arch", "status", "device", "epochs", "test_ndcg", "created_at", "finished_at")
    list_filter = ("status", "arch")
    readonly_fields = ("arch", "status", "device", "config", "dataset", "metrics", "error", "created_by",
                       "created_at", "started_at", "finished_at", "model_version_link")
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
        run = training_run_queue(user=request.user)
        if run is None:
            messages.warning(request, _("A training run is already pending or running."))
        else:
            messages.success(request, _("Training run #%(run)s queued; its progress appears below.") % {"run": run.pk})
        return HttpResponseRedirect(reverse("admin:training_trainingrun_changelist"))

    @admin.display(description=_("model version"))
    def model_version_link(self, obj):
        version = ModelVersion.objects.filter(run=obj).first()
        if version is None:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:training_modelversion_change", args=[version.pk]), version)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, unquote(object_id))
        if run is not None:
            series = selectors.training_run_series(history=run.history)
            loss_datasets = [{"label": _("training loss"), "data": series["loss"]}]
            if series["valid_loss"]:
                loss_datasets.append({"label": _("validation loss"), "data": series["valid_loss"]})
            metric_datasets = [{"label": name, "data": values} for name, values in series["metrics"].items()]
            extra_context = {
                **(extra_context or {}),
                "series": series,
                "loss_chart": line_chart(labels=series["epochs"], datasets=loss_datasets, x_title=_("epoch"),
                                         y_title=_("loss")),
                "metrics_chart": line_chart(labels=series["epochs"], datasets=metric_datasets, x_title=_("epoch"),
                                            y_title=_("validation metric")),
                "run_live": run.status in (RunStatus.PENDING, RunStatus.RUNNING),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        busy = TrainingRun.objects.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING]).exists()
        return super().changelist_view(request, {**(extra_context or {}), "run_busy": busy})


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "valid_ndcg", "test_ndcg", "gate_passed", "run", "created_at", "activated_at")
    list_filter = ("is_active",)
    readonly_fields = ("name", "run", "is_active", "gate_summary", "artifact_path", "artifact_sha256", "created_at",
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
        model_version_activation_queue(version=version)
        messages.success(request, _("Version %(name)s is being activated: its embeddings are re-encoded in the background.")
                         % {"name": version})

    def has_activate_permission(self, request):
        return request.user.has_perm("training.add_trainingrun")

    @admin.display(description=_("activation gate"))
    def gate_summary(self, obj):
        gate = obj.gate
        if not gate:
            return "—"

        def number(value):
            return "—" if value is None else f"{value:.4f}"

        verdict = _("passed") if gate.get("passed") else _("held back")
        text = format_html("{}: {} {} · {} {} · {}", gate.get("metric", ""), _("this version"), number(gate.get("candidate")),
                           _("active version then"), number(gate.get("active")), verdict)
        if gate.get("basis") == "same data":
            text = format_html("{} · {}", text, _("both scored on this version's validation data (%(customers)d customers)")
                               % {"customers": gate.get("customers", 0)})
        elif gate.get("basis") == "stored":
            text = format_html("{} · {}", text, _("stored figures: a model could not be read"))
        if gate.get("unlearning"):
            text = format_html("{} ({})", text, gate["unlearning"])
        return text

    def get_urls(self):
        return [
            path("<path:object_id>/activate/", self.admin_site.admin_view(self.activate_view),
                 name="training_modelversion_activate"),
            *super().get_urls(),
        ]

    def activate_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_activate_permission(request):
            raise PermissionDenied
        version = self.get_object(request, unquote(object_id))
        if version is None:
            raise Http404
        model_version_activation_queue(version=version)
        messages.success(request, _("Version %(name)s is being activated: its embeddings are re-encoded in the background.")
                         % {"name": version})
        return HttpResponseRedirect(reverse("admin:training_modelversion_change", args=[version.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = self.get_object(request, unquote(object_id))
        if version is not None:
            extra_context = {
                **(extra_context or {}),
                "evaluation": selectors.model_version_evaluation(version=version),
                "may_activate": self.has_activate_permission(request),
            }
        return super().change_view(request, object_id, form_url, extra_context)


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
