"""Admin of the profiles app: profiles (read-only, each a page of pictures), the embedding map,
feature sets with their report, batch builds with live progress and a button to start one."""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from profiles import charts, page
from profiles import identity_admin  # noqa: F401  (registers the identity-merge journal)
from profiles.models import FeatureSet, Profile, ProfileBuild
from profiles.builds import profile_build_running


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
    search_help_text = _("A customer's pseudonymous key, or their external id in any import source")
    show_full_result_count = False
    raw_id_fields = ("customer",)
    fields = ("customer", "value_tier", "lifecycle_stage", "top_categories", "distinctive", "traits", "feature_set",
              "model_version", "events_included", "last_event_at", "watermark", "snapshot_at", "computed_at")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # a profile is derived data: erasure or a rebuild removes it, never a click

    def get_search_results(self, request, queryset, search_term):
        """An external id is found through its pseudonym in each source (one HMAC per source, then
        an index lookup); the plain search matches the key itself."""
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            keys = page.customer_keys_of_external_id(external_id=term)
            results = results | queryset.filter(customer__key__in=keys)
        return results, may_have_duplicates

    def get_urls(self):
        return [
            path("map/", self.admin_site.admin_view(self.map_view), name="profiles_profile_map"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        profile = self.get_object(request, unquote(object_id))
        if profile is not None:
            extra_context = {**(extra_context or {}), **self._profile_page_context(request, profile)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _profile_page_context(self, request, profile) -> dict:
        from ingestion.admin import mask_email, mask_text
        from ingestion.pseudonyms import pii_decrypt

        from crm.explain import prediction_explained
        from crm.selectors import customer_prediction_get

        data = page.profile_page(profile=profile)
        customer = profile.customer
        prediction = customer_prediction_get(customer_id=profile.pk)
        return {
            "prediction": prediction_explained(prediction) if prediction else None,
            "customer": customer,
            "customer_pii": [
                (_("email"), mask_email(pii_decrypt(customer.email_encrypted))),
                (_("name"), mask_text(pii_decrypt(customer.name_encrypted))),
                (_("phone"), mask_text(pii_decrypt(customer.phone_encrypted))),
            ],
            "can_reveal_pii": request.user.has_perm("ingestion.view_pii"),
            **data,
            "chart_activity": charts.activity_chart(data["activity"]),
            "chart_categories": charts.categories_chart(data["categories"]),
            "chart_spend": charts.spend_chart(data["spend"]),
            "chart_percentiles": charts.percentiles_chart(data["percentiles"]),
            "chart_percentiles_height": charts.horizontal_bars_height(len(data["percentiles"])),
            "chart_rfm": charts.rfm_chart(
                data["rfm_population"], customer_id=profile.pk,
                recency_days=profile.traits.get("recency_days"), net_monetary=profile.traits.get("net_monetary"),
            ),
        }

    def map_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        from segments.models import Segment

        colour_by = request.GET.get("colour", "value_tier")
        colour_by = colour_by if colour_by in page.MAP_COLOURINGS else "value_tier"
        try:
            segment_id = int(request.GET.get("segment", ""))
        except ValueError:
            segment_id = None
        segments = list(Segment.objects.only("id", "name").order_by("name"))
        if colour_by == "segment" and segment_id is None and segments:
            segment_id = segments[0].pk
        projection = page.profiles_map(space=request.GET.get("space"), colour_by=colour_by, segment_id=segment_id)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Embedding map"),
            "opts": self.opts,
            "projection": projection,
            "chart_map": charts.map_chart(projection["points"]),
            "spaces": [("fused", _("fused")), ("embedding", _("learned embedding")), ("traits", _("traits"))],
            "colourings": [("value_tier", _("value tier")), ("lifecycle_stage", _("lifecycle stage")),
                           ("segment", _("segment membership"))],
            "colour_by": colour_by,
            "segments": segments,
            "segment_id": segment_id,
        }
        return TemplateResponse(request, "admin/profiles/profile/map.html", context)

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
    fields = ("version", "is_active", "report_link", "customers_fitted", "explained_variance", "fusion_weight", "target",
              "information_gain", "combinations", "feature_names", "pipeline_sha256", "created_at")
    readonly_fields = fields

    def get_urls(self):
        return [
            path("report/", self.admin_site.admin_view(self.report_view), name="profiles_featureset_report"),
            path("<int:feature_set_id>/report/", self.admin_site.admin_view(self.report_view),
                 name="profiles_featureset_report_of"),
            *super().get_urls(),
        ]

    def report_view(self, request, feature_set_id: int | None = None):
        """The information gain of each feature as bars, and the combinations; the active feature set's by default."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        feature_sets = FeatureSet.objects.defer("pipeline")
        if feature_set_id is None:
            feature_set = feature_sets.filter(is_active=True).first()
        else:
            feature_set = feature_sets.filter(pk=feature_set_id).first()
            if feature_set is None:
                raise Http404
        report = page.feature_report(feature_set=feature_set)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Feature report"),
            "opts": self.opts,
            "feature_set": feature_set,
            "report": report,
            "chart_information_gain": charts.feature_report_chart(report["features"]),
            "chart_height": charts.horizontal_bars_height(len(report["features"])),
        }
        return TemplateResponse(request, "admin/profiles/featureset/report.html", context)

    @admin.display(description=_("report as a chart"))
    def report_link(self, obj):
        url = reverse("admin:profiles_featureset_report_of", args=[obj.pk])
        return format_html('<a href="{}" id="feature-report-link">{}</a>', url, _("Information gain, as a chart"))

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
