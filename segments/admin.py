from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import StreamingHttpResponse
from django.utils.translation import gettext_lazy as _

from segments import selectors, services
from segments.models import Segment, SegmentKind
from segments.rules import RuleError, rule_canonical


class RuleSegmentForm(forms.ModelForm):
    """Operators define rule segments here; the rule is checked before anything is saved."""

    class Meta:
        model = Segment
        fields = ("name", "rule")
        widgets = {"rule": forms.Textarea(attrs={"rows": 3, "cols": 80})}

    def clean_rule(self):
        try:
            return rule_canonical(self.cleaned_data["rule"])
        except RuleError as error:
            raise forms.ValidationError(str(error)) from None


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "status", "size", "summary", "refreshed_at")
    list_filter = ("kind", "status")
    search_fields = ("name",)
    readonly_fields = ("kind", "rule", "definition_summary", "description", "status", "size", "error", "created_by",
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
        vars(obj).update(vars(segment))
        self.message_user(request, _("Segment created; its members are being computed."), messages.SUCCESS)

    @admin.display(description=_("summary"))
    def summary(self, obj):
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

    @admin.action(description=_("Recompute members of the selected segments"))
    def refresh(self, request, queryset):
        from segments.tasks import segment_refresh_task

        for segment in queryset:
            segment_refresh_task.delay(segment.pk)
        self.message_user(request, _("Queued %(n)s refreshes.") % {"n": queryset.count()}, messages.SUCCESS)

    @admin.action(description=_("Export members of the selected segment as CSV"))
    def export_members(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, _("Choose exactly one segment to export."), messages.ERROR)
            return None
        segment = queryset.get()
        response = StreamingHttpResponse(selectors.segment_members_csv(segment=segment), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="segment-{segment.pk}.csv"'
        return response
