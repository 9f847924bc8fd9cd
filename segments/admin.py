import re

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from config.charts import line_chart
from profiles import selectors as profile_selectors
from segments import selectors, services
from segments.models import Segment, SegmentKind
from segments.rules import MAX_RULE_LENGTH, RuleError, rule_canonical
from segments.tasks import segment_refresh_queue

_KEY = re.compile(r"^[0-9a-f]{64}$")


class RuleSegmentForm(forms.ModelForm):
    """Operators define rule segments here; the rule is checked before anything is saved."""

    class Meta:
        model = Segment
        fields = ("name", "rule")
        widgets = {"rule": forms.Textarea(attrs={
            "rows": 3, "cols": 80, "spellcheck": "false",
            "data-valid-text": _("Valid: %s profiles match now."),
            "data-failed-text": _("The rule could not be checked right now; it is checked again on save."),
        })}

    def clean_rule(self):
        try:
            return rule_canonical(self.cleaned_data["rule"])
        except RuleError as error:
            if error.column is None:
                raise forms.ValidationError(error.message) from None
            raise forms.ValidationError(
                _("%(message)s (at character %(column)s)"), params={"message": error.message, "column": error.column},
            ) from None


class LookalikeForm(forms.Form):
    """A lookalike audience from a seed: pasted customer keys or the members of a segment."""

    name = forms.CharField(label=_("name"), max_length=200)
    seed_keys = forms.CharField(
        label=_("seed customer keys"), required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text=_("Pseudonymous customer keys (64 hex characters), one per line or separated by commas."),
    )
    seed_segment = forms.ModelChoiceField(
        label=_("or the members of a segment"), required=False, queryset=Segment.objects.all(),
        help_text=_("Its best-scored members are the seed (at most %(n)s).") % {"n": settings.API_MAX_SEEDS},
    )
    size = forms.IntegerField(label=_("size"), min_value=1, max_value=settings.SEGMENT_MAX_LOOKALIKE, initial=1000,
                              help_text=_("How many customers most like the seed to include."))
    method = forms.ChoiceField(label=_("method"), choices=[(m, m) for m in profile_selectors.LOOKALIKE_METHODS])
    space = forms.ChoiceField(label=_("space"), choices=[(s, s) for s in profile_selectors.SPACES], initial="fused")

    def clean_seed_keys(self):
        keys = [k.strip().lower() for k in re.split(r"[\s,;]+", self.cleaned_data["seed_keys"]) if k.strip()]
        bad = [k for k in keys if not _KEY.match(k)]
        if bad:
            raise forms.ValidationError(_("Not a customer key: %(keys)s"), params={"keys": ", ".join(b[:20] for b in bad[:3])})
        if len(keys) > settings.API_MAX_SEEDS:
            raise forms.ValidationError(_("At most %(n)s seed keys."), params={"n": settings.API_MAX_SEEDS})
        return keys

    def clean(self):
        data = super().clean()
        keys, segment = data.get("seed_keys"), data.get("seed_segment")
        if "seed_keys" in self.errors:
            return data
        if bool(keys) == bool(segment):
            raise forms.ValidationError(_("Give seed keys or choose a segment, not both and not neither."))
        if segment is not None:
            data["seed_keys"] = selectors.segment_seed_keys(segment=segment, limit=settings.API_MAX_SEEDS)
            if not data["seed_keys"]:
                self.add_error("seed_segment", _("This segment has no members yet."))
        return data


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "status", "size", "summary", "refreshed_at")
    list_filter = ("kind", "status")
    search_fields = ("name",)
    readonly_fields = ("kind", "rule", "definition_summary", "description_table", "status", "size", "error", "created_by",
                       "created_at", "refreshed_at")
    actions = ["refresh", "export_members"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = RuleSegmentForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ("name", "rule") if obj is None else ("name", *self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            Segment.objects.filter(pk=obj.pk).update(name=obj.name)
            return
        with transaction.atomic():
            segment = services.segment_create_rule(
                name=form.cleaned_data["name"], rule=form.cleaned_data["rule"], created_by=request.user,
            )
            segment_refresh_queue(segment=segment)
        vars(obj).update(vars(segment))
        self.message_user(request, _("Segment created; its members are being computed."), messages.SUCCESS)

    @admin.display(description=_("summary"))
    def summary(self, obj):
        if obj.kind == SegmentKind.CLUSTER and obj.definition:
            where = _("cluster %(index)s of %(k)s") % {"index": obj.definition["index"] + 1, "k": obj.definition["k"]}
            return f"{where} · {obj.description.get('summary', '—')}"
        return obj.description.get("summary", "—")

    @admin.display(description=_("definition"))
    def definition_summary(self, obj):
        if obj.kind == SegmentKind.LOOKALIKE:
            d = obj.definition
            return _("%(size)s customers most like %(seeds)s seeds (%(method)s, %(space)s space)") % {
                "size": d["size"], "seeds": len(d["seed_customer_ids"]), "method": d["method"], "space": d["space"]}
        if obj.kind == SegmentKind.CLUSTER:
            d = obj.definition
            return _("cluster %(index)s of %(k)s, k-means over the %(space)s space") % {
                "index": d["index"] + 1, "k": d["k"], "space": d["space"]}
        return obj.rule

    @admin.display(description=_("what the members have in common"))
    def description_table(self, obj):
        d = obj.description
        if not d:
            return "—"
        categories = format_html_join(
            ", ", "{} {}", ((c["name"], f"{c['share']:.0%}") for c in d.get("top_categories", []))
        ) or "—"

        def number(key, pattern="{:,.2f}"):
            return "—" if d.get(key) is None else pattern.format(d[key])

        rows = [
            (_("summary"), d.get("summary", "—")),
            (_("top categories (mean share of interest)"), categories),
            (_("median orders"), number("median_frequency", "{:g}")),
            (_("median net spend"), number("median_net_monetary")),
            (_("median days since last purchase"), number("median_recency_days", "{:.0f}")),
        ]
        return format_html('<table class="segment-description">{}</table>',
                           format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))

    @admin.action(description=_("Recompute members of the selected segments"))
    def refresh(self, request, queryset):
        for segment in queryset:
            segment_refresh_queue(segment=segment)
        self.message_user(request, _("Queued %(n)s refreshes.") % {"n": queryset.count()}, messages.SUCCESS)

    @admin.action(description=_("Export members of the selected segment as CSV"))
    def export_members(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, _("Choose exactly one segment to export."), messages.ERROR)
            return None
        return self._csv_response(queryset.get())

    @staticmethod
    def _csv_response(segment):
        response = StreamingHttpResponse(selectors.segment_members_csv(segment=segment), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="segment-{segment.pk}.csv"'
        return response

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("rules/check/", view(self.rule_check_view), name="segments_segment_rule_check"),
            path("lookalike/", view(self.lookalike_view), name="segments_segment_lookalike"),
            path("<path:object_id>/export.csv", view(self.export_view), name="segments_segment_export"),
            path("<path:object_id>/refresh/", view(self.refresh_view), name="segments_segment_refresh"),
            *super().get_urls(),
        ]

    def rule_check_view(self, request):
        """Called by rule-check.js as the operator types: the count of matching profiles, or the
        error and the character it points at (400)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        rule = request.GET.get("rule", "")
        if not rule.strip():
            return JsonResponse({"valid": False, "error": str(_("Type a rule.")), "position": None, "column": None},
                                status=400)
        if len(rule) > MAX_RULE_LENGTH:
            return JsonResponse({"valid": False, "error": str(_("A rule is at most %(n)s characters.") % {
                "n": MAX_RULE_LENGTH}), "position": MAX_RULE_LENGTH, "column": MAX_RULE_LENGTH + 1}, status=400)
        result = selectors.segment_rule_check(rule=rule)
        return JsonResponse(result, status=200 if result["valid"] else 400)

    def lookalike_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = LookalikeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                segment = services.segment_create_lookalike(
                    name=data["name"], seed_keys=data["seed_keys"], size=data["size"], method=data["method"],
                    space=data["space"], created_by=request.user,
                )
            except services.SegmentError as error:
                form.add_error("seed_segment" if data.get("seed_segment") else "seed_keys", str(error))
            else:
                segment_refresh_queue(segment=segment)
                self.message_user(request, _("Lookalike segment created; its members are being computed."),
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:segments_segment_change", args=[segment.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Build a lookalike segment"),
            "opts": self.opts,
            "form": form,
            "adminform": admin.helpers.AdminForm(form, [(None, {"fields": list(form.fields)})], {}),
        }
        return TemplateResponse(request, "admin/segments/segment/lookalike.html", context)

    def _segment_or_404(self, request, object_id):
        segment = self.get_object(request, unquote(object_id))
        if segment is None:
            raise Http404
        return segment

    def export_view(self, request, object_id):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return self._csv_response(self._segment_or_404(request, object_id))

    def refresh_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        segment = self._segment_or_404(request, object_id)
        segment_refresh_queue(segment=segment)
        self.message_user(request, _("Refresh queued; the size and trend update when it finishes."), messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:segments_segment_change", args=[segment.pk]))

    def add_view(self, request, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "rule_check_url": reverse("admin:segments_segment_rule_check")}
        return super().add_view(request, form_url, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        segment = self.get_object(request, unquote(object_id))
        if segment is not None:
            trend = selectors.segment_trend(segment=segment)
            extra_context = {
                **(extra_context or {}),
                "trend_points": len(trend),
                "trend_chart": line_chart(
                    labels=[t["taken_at"].strftime("%Y-%m-%d %H:%M") for t in trend],
                    datasets=[{"label": _("members"), "data": [t["size"] for t in trend]}],
                    y_title=_("members"),
                ),
            }
        return super().change_view(request, object_id, form_url, extra_context)
