from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from training.models import ModelVersion, TrainingRun


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


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "run", "created_at", "activated_at")
    list_filter = ("is_active",)
    readonly_fields = ("name", "run", "is_active", "metrics", "gate", "artifact_path", "artifact_sha256", "created_at",
                       "activated_at")
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
