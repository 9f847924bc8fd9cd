"""Compliance screens: the request queue with verify / execute / close for the compliance group
(operators see the queue and may file), receipts, export downloads, the audit log, the
suppression list and the unlearning ledger (read-only)."""

import io

from django import forms
from django.contrib import admin, messages
from django.http import FileResponse, Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from privacy import selectors, services
from privacy.export import access_export_open
from privacy.models import AuditEntry, ErasureLedger, PrivacyRequest, RequestKind, RequestState, SuppressedSubject

# The erasure receipt names each store by a stable key (the receipt is data); these are its labels.
RECEIPT_STORES = {
    "customers": _("customers"), "events": _("events"), "profiles": _("profiles"),
    "predictions": _("churn, value and risk predictions"), "segment_memberships": _("segment memberships"),
    "customer_values": _("customer value snapshots"), "ground_truth": _("synthetic ground truth"),
    "quarantined_rows": _("quarantined rows"), "social_edges": _("social edges"), "identity_merges": _("identity merges"),
    "suppression_list": _("suppression list"), "redis_keys": _("pending refresh keys (Redis)"),
    "import_files": _("uploaded import files"), "training_snapshots": _("training snapshots"),
    "vector_indexes": _("vector indexes"), "exports": _("access exports"),
    "pseudonym_cache": _("in-memory pseudonym cache"), "restriction_list": _("restriction list"),
}

# the buttons of the request page: step, the service it calls, the states it applies to, what it says when done
DECISIONS = {
    "verify": (services.privacy_request_verify, (RequestState.RECEIVED,), _("Request verified.")),
    "execute": (services.privacy_request_execute,
                (RequestState.VERIFIED, RequestState.PARTIALLY_FAILED, RequestState.EXECUTING),
                _("Request executed; see the receipt.")),
    "close": (services.privacy_request_close, (RequestState.COMPLETED,), _("Request closed.")),
}


class PrivacyRequestForm(forms.ModelForm):
    external_id = forms.CharField(label=_("subject's external id"), max_length=256,
                                  help_text=_("Matched through keyed tokens; never stored in clear."))

    class Meta:
        model = PrivacyRequest
        fields = ("kind", "source", "note")


@admin.register(PrivacyRequest)
class PrivacyRequestAdmin(admin.ModelAdmin):
    list_display = ("__str__", "kind", "state", "filed_by", "created_at", "verified_by", "executed_by", "completed_at")
    list_filter = ("kind", "state")
    readonly_fields = ("kind", "state", "source", "subject_token", "note", "filed_by", "verified_by", "executed_by",
                       "closed_by", "created_at", "verified_at", "executed_at", "completed_at", "closed_at", "attempts",
                       "error", "receipt_table", "export_link")
    actions = ["verify", "execute", "close"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = PrivacyRequestForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ("kind", "source", "external_id", "note") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return False if obj is not None else super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        filed = services.privacy_request_file(
            kind=form.cleaned_data["kind"], source=form.cleaned_data["source"] or "default",
            external_id=form.cleaned_data["external_id"], actor=request.user, note=form.cleaned_data.get("note", ""),
        )
        vars(obj).update(vars(filed))

    @admin.display(description=_("receipt"))
    def receipt_table(self, obj):
        stores = obj.receipt.get("stores", {})
        if not stores:
            return "—"
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((RECEIPT_STORES.get(name, name), detail.get("removed", detail.get("added", detail.get("note", ""))),
              detail.get("at", ""))
             for name, detail in sorted(stores.items())),
        )
        models = obj.receipt.get("models", {})
        footer = format_html("<p>{}: {} · {}: {}</p>", _("suppression token"), obj.receipt.get("suppression_token", "—"),
                             _("model versions to retire by"), models.get("retire_by", "—"))
        return format_html('<table id="receipt">{}</table>{}', rows, footer)

    @admin.display(description=_("access export"))
    def export_link(self, obj):
        if obj.kind != RequestKind.ACCESS_EXPORT or not obj.export_path:
            return "—"
        if obj.export_expires_at and obj.export_expires_at < timezone.now():
            return _("expired")
        url = reverse("admin:privacy_privacyrequest_export", args=[obj.pk])
        return format_html('<a href="{}">{}</a> ({} {})', url, _("download"), _("expires"), obj.export_expires_at)

    def get_urls(self):
        return [path("<int:pk>/export/", self.admin_site.admin_view(self.export_view), name="privacy_privacyrequest_export"),
                path("<int:pk>/decide/<str:step>/", self.admin_site.admin_view(self.decide_view),
                     name="privacy_privacyrequest_decide"),
                *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        filed = PrivacyRequest.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        if filed is not None:
            may_decide = request.user.has_perm(services.EXECUTE_PERMISSION)
            extra_context = {
                **(extra_context or {}),
                "may_decide": may_decide,
                "decisions": [
                    {"step": step, "label": label, "enabled": filed.state in DECISIONS[step][1]}
                    for step, label in (("verify", _("Verify")), ("execute", _("Execute")), ("close", _("Close")))
                ],
                "audit_entries": selectors.privacy_request_audit(request=filed),
                "audit_url": reverse("admin:privacy_auditentry_changelist")
                + f"?target_type={filed._meta.label_lower}&target_id={filed.pk}",
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def decide_view(self, request, pk: int, step: str):
        """A button of the request page. The service checks the permission and audits a refusal, so
        an operator who forges the POST is refused exactly like one who uses the action."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if step not in DECISIONS or not self.has_view_permission(request):
            raise Http404
        filed = PrivacyRequest.objects.filter(pk=pk).first()
        if filed is None:
            raise Http404
        service, _states, done_message = DECISIONS[step]
        try:
            service(request=filed, actor=request.user)
        except services.NotAllowed:
            self.message_user(request, _("Only the compliance group may verify, execute or close privacy requests; "
                                         "the attempt was recorded in the audit log."), messages.ERROR)
        except services.RequestError as error:
            self.message_user(request, str(error), messages.WARNING)
        except Exception as error:  # recorded on the request as partially failed
            self.message_user(request, _("#%(id)s failed and can be retried: %(error)s") % {
                "id": filed.pk, "error": error.__class__.__name__}, messages.ERROR)
        else:
            self.message_user(request, done_message, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:privacy_privacyrequest_change", args=[filed.pk]))

    def export_view(self, request, pk: int):
        from privacy.audit import audit_record

        filed = PrivacyRequest.objects.filter(pk=pk, kind=RequestKind.ACCESS_EXPORT).first()
        if not request.user.has_perm(services.EXECUTE_PERMISSION):
            audit_record(action="privacy_request.export_refused", actor=request.user, target_type="privacy.privacyrequest",
                         target_id=str(pk))
            raise Http404
        archive = access_export_open(request=filed) if filed is not None else None
        if archive is None:
            raise Http404
        audit_record(action="privacy_request.export_downloaded", actor=request.user, target=filed)
        return FileResponse(io.BytesIO(archive), as_attachment=True, filename=f"access-{filed.pk}.zip",
                            content_type="application/zip")

    def _each(self, request, queryset, step, done_message):
        done = 0
        for filed in queryset:
            try:
                step(request=filed, actor=request.user)
                done += 1
            except services.NotAllowed:
                self.message_user(request, _("Only the compliance group may do this; the attempt was recorded."),
                                  messages.ERROR)
                return
            except services.RequestError as error:
                self.message_user(request, str(error), messages.WARNING)
            except Exception as error:  # recorded on the request as partially failed
                self.message_user(request, _("#%(id)s failed and can be retried: %(error)s") % {
                    "id": filed.pk, "error": error.__class__.__name__}, messages.ERROR)
        if done:
            self.message_user(request, done_message % {"n": done}, messages.SUCCESS)

    @admin.action(description=_("Verify the selected requests (requester is the subject)"))
    def verify(self, request, queryset):
        self._each(request, queryset, services.privacy_request_verify, _("%(n)s request(s) verified."))

    @admin.action(description=_("Execute the selected verified requests"))
    def execute(self, request, queryset):
        self._each(request, queryset, services.privacy_request_execute, _("%(n)s request(s) executed; see the receipt."))

    @admin.action(description=_("Close the selected completed requests"))
    def close(self, request, queryset):
        self._each(request, queryset, services.privacy_request_close, _("%(n)s request(s) closed."))


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor_label", "action", "target_type", "target_id")
    list_filter = ("action",)
    search_fields = ("=target_id", "actor_label")


@admin.register(SuppressedSubject)
class SuppressedSubjectAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "reason", "created_at")


@admin.register(ErasureLedger)
class ErasureLedgerAdmin(ReadOnlyAdmin):
    list_display = ("request", "erased_at", "model_versions", "retire_by", "retired_at")
