"""Admin of the profiles app: profiles (read-only), feature sets with their report, batch builds
with live progress and a button to start one."""

from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from profiles import identity_admin  # noqa: F401  (registers the identity-merge journal)
from profiles.models import FeatureSet, Profile, ProfileBuild
from profiles.services import profile_build_running


def _json_table(rows, columns) -> str:
    if not rows:
        return "—"
    head = format_html_join("", "<th>{}</th>", ((label,) for _, label in columns))
    body = format_html_join(
        "", "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((row.get(key, "—"),) for key, _ in columns)),) for row in rows),
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("customer", "value_tier", "lifecycle_stage", "events_included", "last_event_at", "feature_set", "computed_at")
    list_filter = ("value_tier", "lifecycle_stage", "feature_set")
    list_select_related = ("customer", "feature_set")
    search_fields = ("=customer__key",)
    show_full_result_count = False
    raw_id_fields = ("customer",)
    fields = ("customer", "value_tier", "lifecycle_stage", "top_categories", "distinctive", "traits", "feature_set",
              "model_version", "events_included", "last_event_at", "watermark", "snapshot_at", "computed_at")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("top categories"))
    def top_categories(self, obj):
        rows = [{"name": c["name"], "share": f"{c['share']:.0%}"} for c in obj.explanation.get("top_categories", [])]
        return _json_table(rows, [("name", _("category")), ("share", _("share"))])

    @admin.display(description=_("where this customer differs most"))
    def distinctive(self, obj):
        return _json_table(
            obj.explanation.get("distinctive", []),
            [("feature", _("trait")), ("value", _("value")), ("z", _("z-score")), ("direction", _("vs population"))],
        )


@admin.register(FeatureSet)
class FeatureSetAdmin(admin.ModelAdmin):
    list_display = ("__str__", "is_active", "customers_fitted", "explained_variance", "created_at")
    fields = ("version", "is_active", "customers_fitted", "explained_variance", "fusion_weight", "target",
              "information_gain", "combinations", "feature_names", "pipeline_sha256", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("PCA explained variance"))
    def explained_variance(self, obj):
        pca = obj.report.get("pca") or {}
        if not pca or pca.get("explained_variance") is None:
            return "—"
        return f"{pca['explained_variance']:.1%} ({pca['components']})"

    @admin.display(description=_("business target"))
    def target(self, obj):
        report = obj.report
        if "positives" not in report:
            return report.get("skipped", "—")
        return f"{report['target']}: {report['positives']} / {report['customers']}"

    @admin.display(description=_("information gain per feature"))
    def information_gain(self, obj):
        return _json_table(
            obj.report.get("features", []),
            [("rank", _("rank")), ("name", _("feature")), ("mutual_information", _("mutual information (nats)"))],
        )

    @admin.display(description=_("feature combinations"))
    def combinations(self, obj):
        return _json_table(
            obj.report.get("combinations", []),
            [("name", _("combination")), ("formula", _("formula")), ("mutual_information", _("mutual information")),
             ("best_part_mutual_information", _("better part")),
             ("noise_mutual_information", _("noise level (95th percentile of shuffles)")), ("kept", _("kept"))],
        )


@admin.register(ProfileBuild)
class ProfileBuildAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "progress_bar", "profiles_written", "feature_set", "started_at", "finished_at")
    readonly_fields = ("status", "progress_bar", "chunks_total", "chunks_done", "profiles_written", "feature_set",
                       "error", "created_by", "started_at", "finished_at")
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("progress"))
    def progress_bar(self, obj):
        percent = round(100 * obj.progress)
        return format_html('<progress max="100" value="{}"></progress> {}%', percent, percent)

    def get_urls(self):
        return [
            path("start/", self.admin_site.admin_view(self.start_view), name="profiles_profilebuild_start"),
            *super().get_urls(),
        ]

    def start_view(self, request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("profiles.view_profilebuild"):
            messages.error(request, _("You may not start profile builds."))
        elif profile_build_running():
            messages.warning(request, _("A profile build is already running."))
        else:
            from config.celery import BrokerUnavailable, broker_check
            from profiles.tasks import profile_build_task

            try:
                broker_check()
            except BrokerUnavailable as exc:
                messages.error(request, str(exc))
            else:
                transaction.on_commit(profile_build_task.delay)
                messages.success(request, _("Profile build queued; its progress appears below."))
        return HttpResponseRedirect(reverse("admin:profiles_profilebuild_changelist"))

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "build_running": profile_build_running()}
        return super().changelist_view(request, extra_context)
