import json
import uuid
from pathlib import Path

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from config.celery import BrokerUnavailable
from ingestion import import_jobs, selectors
from ingestion.tasks import import_job_queue
from ingestion.pseudonyms import pii_decrypt
from ingestion.importers.sources import EVENT_FILE_FIELDS, SourceError
from ingestion.normalise import value_map_parse
from ingestion.models import (
    Customer,
    CustomerGroundTruth,
    Event,
    ImportFormat,
    ImportJob,
    ImportStatus,
    Item,
    QuarantinedRow,
    RefreshOutbox,
    SocialEdge,
)
from ingestion.pii import customer_pii_reveal


def mask_email(value: str | None) -> str:
    if not value:
        return "—"
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_text(value: str | None) -> str:
    if not value:
        return "—"
    return value[:1] + "***" + (value[-2:] if len(value) > 4 else "")


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("short_key", "source", "age_band", "gender", "region", "is_loyalty_member", "consent_profiling", "created_at")
    list_filter = ("source", "gender", "age_band", "is_loyalty_member", "consent_profiling", "consent_marketing")
    search_fields = ("=key",)
    show_full_result_count = False
    readonly_fields = ("key", "source", "email_masked", "name_masked", "phone_masked", "created_at", "updated_at")
    fields = readonly_fields[:2] + ("email_masked", "name_masked", "phone_masked", "age", "age_band", "gender", "region",
                                   "signup_date", "is_loyalty_member", "consent_profiling", "consent_marketing",
                                   "attributes", "created_at", "updated_at")

    @admin.display(description=_("key"))
    def short_key(self, obj):
        return f"{obj.key[:16]}…"

    @admin.display(description=_("email (masked)"))
    def email_masked(self, obj):
        return mask_email(pii_decrypt(obj.email_encrypted))

    @admin.display(description=_("name (masked)"))
    def name_masked(self, obj):
        return mask_text(pii_decrypt(obj.name_encrypted))

    @admin.display(description=_("phone (masked)"))
    def phone_masked(self, obj):
        return mask_text(pii_decrypt(obj.phone_encrypted))

    def get_urls(self):
        return [
            path("<path:object_id>/reveal/", self.admin_site.admin_view(self.reveal_view), name="ingestion_customer_reveal"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_reveal_pii": request.user.has_perm("ingestion.view_pii")}
        return super().change_view(request, object_id, form_url, extra_context)

    def reveal_view(self, request, object_id):
        # a reveal is audited, so it must never happen as the side effect of a GET (prefetch, link, reload)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_view_permission(request):
            raise PermissionDenied
        customer = self.get_object(request, unquote(object_id))
        if customer is None:
            raise Http404
        clear = customer_pii_reveal(customer=customer, actor=request.user)
        labels = {"email": _("email"), "name": _("name"), "phone": _("phone")}
        context = {
            **self.admin_site.each_context(request),
            "title": _("Personal data of %(customer)s") % {"customer": customer},
            "opts": self.opts,
            "original": customer,
            "revealed": [(labels[name], value) for name, value in clear.items()],
        }
        return TemplateResponse(request, "admin/ingestion/customer/reveal.html", context)


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ("sku", "title", "category_path", "brand", "price", "currency")
    search_fields = ("=sku", "title")
    list_filter = ("category_path",)
    show_full_result_count = False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "event_type", "customer", "item", "quantity", "value", "currency", "flags")
    list_filter = ("event_type", "flags", "channel")
    list_select_related = ("customer", "item")
    raw_id_fields = ("customer", "item", "import_job")
    show_full_result_count = False
    # tens of millions of rows: no full count, no date hierarchy, newest first by the BRIN-friendly column
    ordering = ("-occurred_at",)

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SocialEdge)
class SocialEdgeAdmin(admin.ModelAdmin):
    list_display = ("source_customer", "relation", "target_customer", "occurred_at", "weight")
    list_filter = ("relation",)
    raw_id_fields = ("source_customer", "target_customer")
    show_full_result_count = False


@admin.register(CustomerGroundTruth)
class CustomerGroundTruthAdmin(admin.ModelAdmin):
    list_display = ("customer", "segment", "churned_at")
    list_filter = ("segment",)
    raw_id_fields = ("customer",)


class QuarantinedRowInline(admin.TabularInline):
    model = QuarantinedRow
    fields = ("line_number", "reason", "raw_row")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        self._clear = request.user.has_perm("ingestion.view_pii")
        return super().get_queryset(request).order_by("line_number")

    @admin.display(description=_("raw row"))
    def raw_row(self, obj):
        """Clear for Compliance (who may see personal data); masked for everyone else."""
        return selectors.quarantined_row_raw(row=obj, clear=getattr(self, "_clear", False))


def _mapping_targets() -> dict[str, tuple[str, ...]]:
    """The fields a file of each kind can fill, in the order the upload form lists them."""
    from ingestion import row_validation

    return {
        "events": EVENT_FILE_FIELDS,  # the event fields, then the customer columns an order export carries
        "customers": tuple(row_validation.CustomerRow().fields),
        "items": tuple(row_validation.ItemRow().fields),
        "edges": tuple(row_validation.SocialEdgeRow().fields),
    }


MAPPING_TARGETS = _mapping_targets()
IMPORT_KINDS = [("events", _("events")), ("customers", _("customers")), ("items", _("items")), ("edges", _("social edges"))]
# only event files have constants (a column every row shares, e.g. event_type=purchase); the
# catalogue importers rename columns and validate each row as the API does
KINDS_WITH_CONSTANTS = ("events",)


def _column_field(kind: str, target: str) -> str:
    return f"column__{kind}__{target}"


def _constant_field(kind: str, target: str) -> str:
    return f"constant__{kind}__{target}"


def _value_map_field(kind: str, target: str) -> str:
    return f"valuemap__{kind}__{target}"


STAGED_UPLOAD_SALT = "ingestion.import-upload"
STAGED_UPLOAD_MAX_AGE_S = 24 * 3600


def staged_upload_path(token: str) -> Path | None:
    """The file a preview saved, from the signed token the form carries; None if the token is
    forged, expired, or names a file outside the upload area or gone."""
    try:
        path = Path(signing.loads(token, salt=STAGED_UPLOAD_SALT, max_age=STAGED_UPLOAD_MAX_AGE_S))
    except signing.BadSignature:
        return None
    root = (Path(settings.MEDIA_ROOT) / "imports").resolve()
    return path if path.is_file() and root in path.resolve().parents else None


def upload_store(upload) -> Path:
    directory = Path(settings.MEDIA_ROOT) / "imports"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{uuid.uuid4().hex}_{Path(upload.name).name}"
    with open(target, "wb") as handle:
        for piece in upload.chunks():
            handle.write(piece)
    return target


class ImportUploadForm(forms.ModelForm):
    upload = forms.FileField(label=_("file"), required=False)
    staged_upload = forms.CharField(required=False, widget=forms.HiddenInput)
    kind = forms.ChoiceField(label=_("contents"), choices=IMPORT_KINDS)
    mapping_json = forms.CharField(
        label=_("column mapping (JSON)"), required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_('Advanced, for CSV/JSONL/Parquet, e.g. {"mapping": {"customer_id": "user", "timestamp": "ts"}, '
                    '"constants": {"event_type": "purchase"}, "delimiter": ";"}. The fields above are merged into it.'),
    )

    class Meta:
        model = ImportJob
        fields = ("format", "source")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # one optional input per target field and kind: the column of the file that fills it, and
        # (events) a constant for every row
        for kind, targets in MAPPING_TARGETS.items():
            for target in targets:
                self.fields[_column_field(kind, target)] = forms.CharField(
                    label=target, required=False, max_length=200, widget=forms.TextInput(attrs={"placeholder": target}))
                if kind in KINDS_WITH_CONSTANTS:
                    self.fields[_constant_field(kind, target)] = forms.CharField(
                        label=target, required=False, max_length=200)
                self.fields[_value_map_field(kind, target)] = forms.CharField(
                    label=target, required=False, max_length=2000,
                    widget=forms.TextInput(attrs={"placeholder": _("file value=ours, …")}))

    def mapping_sections(self) -> list[dict]:
        """For the template: per kind, one row per target with its bound inputs."""
        return [
            {"kind": kind, "label": label, "has_constants": kind in KINDS_WITH_CONSTANTS,
             "rows": [{"target": target, "column": self[_column_field(kind, target)],
                       "constant": self[_constant_field(kind, target)] if kind in KINDS_WITH_CONSTANTS else None,
                       "value_map": self[_value_map_field(kind, target)]}
                      for target in MAPPING_TARGETS[kind]]}
            for kind, label in IMPORT_KINDS
        ]

    def clean_mapping_json(self):
        text = self.cleaned_data["mapping_json"].strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(_("Not valid JSON: %(error)s") % {"error": exc}) from exc
        if not isinstance(value, dict):
            raise forms.ValidationError(_("Must be a JSON object."))
        for key in ("mapping", "constants"):
            part = value.get(key, {})
            if not isinstance(part, dict) or not all(isinstance(v, str) for v in part.values()):
                raise forms.ValidationError(_('"%(key)s" must be an object of field names to strings.') % {"key": key})
        maps = value.get("value_maps", {})
        if not isinstance(maps, dict) or not all(
                isinstance(m, dict) and m and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
                for m in maps.values()):
            raise forms.ValidationError(_('"value_maps" must be an object of field names to objects of file values '
                                          'to ours (strings).'))
        return value

    def clean_staged_upload(self):
        token = self.cleaned_data["staged_upload"]
        if not token:
            return None
        path = staged_upload_path(token)
        if path is None:
            raise forms.ValidationError(_("The previewed file is no longer available; choose it again."))
        return path

    def clean_format(self):
        fmt = self.cleaned_data["format"]
        if fmt in (ImportFormat.API, ImportFormat.SYNTHETIC):
            raise forms.ValidationError(_("This format cannot be uploaded."))
        return fmt

    def clean(self):
        """Merge the per-field inputs into the JSON options: every target must be one a file of the
        chosen kind has, given once, as a column or a constant but not both."""
        data = super().clean()
        kind = data.get("kind")
        advanced = data.get("mapping_json")
        if kind is None or advanced is None:
            return data
        if not data.get("upload") and not data.get("staged_upload") and "staged_upload" not in self.errors:
            self.add_error("upload", _("Choose the file to import."))
        targets = MAPPING_TARGETS[kind]
        mapping = dict(advanced.get("mapping") or {})
        constants = dict(advanced.get("constants") or {})
        value_maps = {name: dict(table) for name, table in (advanced.get("value_maps") or {}).items()}
        unknown = sorted((set(mapping) | set(constants) | set(value_maps)) - set(targets))
        if unknown:
            self.add_error("mapping_json", _("Unknown target field(s) for a %(kind)s file: %(unknown)s. Known: %(known)s.")
                           % {"kind": kind, "unknown": ", ".join(unknown), "known": ", ".join(targets)})
        if constants and kind not in KINDS_WITH_CONSTANTS:
            self.add_error("mapping_json", _("Constants apply to event files only."))
        for other_kind, other_targets in MAPPING_TARGETS.items():
            for target in other_targets:
                names = [_column_field(other_kind, target), _value_map_field(other_kind, target)]
                if other_kind in KINDS_WITH_CONSTANTS:
                    names.append(_constant_field(other_kind, target))
                for name in names:
                    value = (data.get(name) or "").strip()
                    if not value:
                        continue
                    if other_kind != kind:
                        self.add_error(name, _("Only for %(other)s files; this upload is %(kind)s. Clear it or change "
                                               "the contents.") % {"other": other_kind, "kind": kind})
                        continue
                    if name.startswith("valuemap__"):
                        try:
                            value_maps.setdefault(target, {}).update(value_map_parse(value))
                        except ValueError as exc:
                            self.add_error(name, _("Write the value map as file value=ours, separated by commas "
                                                   "(%(error)s).") % {"error": exc})
                        continue
                    chosen = mapping if name.startswith("column__") else constants
                    if target in chosen and chosen[target] != value:
                        self.add_error(name, _("%(target)s is also set to %(other)r in the JSON mapping.")
                                       % {"target": target, "other": chosen[target]})
                        continue
                    chosen[target] = value
        both = sorted(set(mapping) & set(constants))
        for target in both:
            field = _constant_field(kind, target)
            self.add_error(field if field in self.fields else "mapping_json",
                           _("%(target)s is given both a column and a constant; choose one.") % {"target": target})
        options = {k: v for k, v in advanced.items() if k not in ("mapping", "constants", "value_maps", "kind")}
        if mapping:
            options["mapping"] = mapping
        if constants:
            options["constants"] = constants
        if value_maps:
            options["value_maps"] = value_maps
        if kind != "events":
            options["kind"] = kind
        data["options"] = options
        return data


def preview_table(preview) -> dict:
    """The preview shaped for the template: one cell per field with its errors."""
    return {
        "fields": preview.fields, "sampled": preview.sampled, "rejected": preview.rejected,
        "rows": [{"line": row["line"], "errors": [f"{f}: {'; '.join(m)}" for f, m in row["errors"].items()],
                  "cells": [{"value": row["values"][f], "errors": row["errors"].get(f, [])} for f in preview.fields]}
                 for row in preview.rows],
        "error_counts": [(f, reason, count) for f, reasons in preview.error_counts.items()
                         for reason, count in reasons.items()],
        "value_counts": list(preview.value_counts.items()),
    }


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ("id", "format", "source", "status", "progress_percent", "rows_read", "rows_inserted",
                    "rows_duplicate", "rows_rejected", "rows_flagged", "rows_removed", "created_at")
    list_filter = ("status", "format", "source")
    readonly_fields = ("source", "format", "file_path", "options", "status", "progress_bar", "rows_read",
                       "rows_inserted", "rows_duplicate", "rows_rejected", "rows_flagged", "rows_removed",
                       "report_table", "error", "created_by", "created_at", "started_at", "finished_at", "duration")
    inlines = [QuarantinedRowInline]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ImportUploadForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("format", "kind", "source", "upload", "staged_upload", "mapping_json")
        return self.readonly_fields

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ("format", "kind", "source", "upload", "staged_upload")}),
                    (_("Advanced"), {"fields": ("mapping_json",), "classes": ("collapse",)})]
        return super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else ()

    def get_inlines(self, request, obj):
        return self.inlines if obj else []

    def has_change_permission(self, request, obj=None):
        return False  # a job is a record of what happened: viewable, never edited

    @admin.display(description=_("progress"))
    def progress_percent(self, obj):
        return f"{obj.progress * 100:.0f}%"

    @admin.display(description=_("progress"))
    def progress_bar(self, obj):
        counts = _("%(read)s rows read · %(inserted)s inserted · %(rejected)s rejected · %(duplicate)s duplicates") % {
            "read": obj.rows_read, "inserted": obj.rows_inserted, "rejected": obj.rows_rejected,
            "duplicate": obj.rows_duplicate}
        return format_html(
            '<div class="import-progress"><progress id="import-progress" max="{}" value="{}">{}</progress>'
            "<span>{} · {}</span></div>",
            obj.progress_total or 1, min(obj.progress_done, obj.progress_total) if obj.progress_total else 0,
            self.progress_percent(obj), self.progress_percent(obj), counts,
        )

    @admin.display(description=_("duration (s)"))
    def duration(self, obj):
        return f"{obj.duration_s:.1f}" if obj.duration_s is not None else "—"

    @admin.display(description=_("cleaning report"))
    def report_table(self, obj):
        if not obj.report:
            return "—"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", obj.report.items())
        return format_html("<table>{}</table>", rows)

    def save_model(self, request, obj, form, change):
        upload = form.cleaned_data["upload"]
        target = upload_store(upload) if upload else form.cleaned_data["staged_upload"]
        options = form.cleaned_data["options"]
        with transaction.atomic():
            job = import_jobs.import_job_create(
                path=target, fmt=form.cleaned_data["format"], source=form.cleaned_data["source"] or None,
                options=options, created_by=request.user,
            )
            import_job_queue(job=job)
        # the admin goes on with `obj` (log entry, redirect): make it the job the service created
        vars(obj).update(vars(job))
        self.message_user(request, _("Import #%(id)s queued.") % {"id": job.pk}, messages.SUCCESS)

    def add_view(self, request, form_url="", extra_context=None):
        if request.method == "POST" and "_preview" in request.POST:
            return self.preview_view(request, form_url)
        try:
            return super().add_view(request, form_url, extra_context)
        except (BrokerUnavailable, SourceError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:ingestion_importjob_changelist"))

    def preview_view(self, request, form_url=""):
        """The add form again, with what the import would make of the file's first lines (the
        mapping, value maps and normalisation applied), the errors by field and the values of the
        enumerated columns. The file is kept in the upload area and the form carries a signed
        token for it, so "Save" imports the file previewed without a second upload."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form_class = self.get_form(request, None)
        form = form_class(request.POST, request.FILES)
        preview = preview_error = None
        if form.is_valid():
            path = upload_store(form.cleaned_data["upload"]) if form.cleaned_data["upload"] else form.cleaned_data["staged_upload"]
            try:
                preview = import_jobs.import_preview(path=path, fmt=form.cleaned_data["format"],
                                                     source=form.cleaned_data["source"] or None,
                                                     options=form.cleaned_data["options"])
            except SourceError as exc:
                preview_error = str(exc)
            data = request.POST.copy()
            data["staged_upload"] = signing.dumps(str(path), salt=STAGED_UPLOAD_SALT)
            form = form_class(data)
            form.is_valid()
        fieldsets = self.get_fieldsets(request, None)
        admin_form = helpers.AdminForm(form, list(fieldsets), {}, (), model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Add %(name)s") % {"name": self.opts.verbose_name},
            "subtitle": None, "adminform": admin_form, "object_id": None, "original": None, "is_popup": False,
            "to_field": None, "media": self.media + admin_form.media, "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []), "preserved_filters": self.get_preserved_filters(request),
            "import_preview": preview_table(preview) if preview else None, "import_preview_error": preview_error,
        }
        return self.render_change_form(request, context, add=True, form_url=form_url)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["auto_refresh"] = bool(obj and obj.status in (ImportStatus.PENDING, ImportStatus.RUNNING))
        context["has_rejects"] = bool(obj and obj.quarantined_rows.exists())
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        return [
            path("<path:object_id>/rejects.csv", self.admin_site.admin_view(self.rejects_view),
                 name="ingestion_importjob_rejects"),
            *super().get_urls(),
        ]

    def rejects_view(self, request, object_id):
        """The quarantined rows of a job as CSV (line, reason, raw line), for fixing and re-importing.
        Raw lines can hold personal data: they come clear only to Compliance (view_pii), masked to
        everyone else, and every download is audited."""
        from privacy.audit import audit_record

        if not (self.has_view_permission(request) and request.user.has_perm("ingestion.view_quarantinedrow")):
            raise PermissionDenied
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404
        clear = request.user.has_perm("ingestion.view_pii")
        audit_record(action="import_job.rejects_downloaded", actor=request.user, target=job, details={"clear": clear})
        response = StreamingHttpResponse(selectors.import_job_rejects_csv(job=job, clear=clear), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="import-{job.pk}-rejects.csv"'
        return response


@admin.register(RefreshOutbox)
class RefreshOutboxAdmin(admin.ModelAdmin):
    """Read-only: what the broker's absence held back; it drains by itself when Redis answers."""

    list_display = ("pk", "customers", "bulk", "attempts", "last_error", "created_at")
    readonly_fields = ("customer_ids", "bulk", "attempts", "last_error", "created_at")
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("customers"))
    def customers(self, obj):
        return len(obj.customer_ids)
