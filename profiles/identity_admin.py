"""Admin of the identity-merge journal: read-only entries and an action that undoes merges."""

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from profiles.merges import IdentityMergeRefused, identity_merge_undo
from profiles.models import IdentityMerge


@admin.register(IdentityMerge)
class IdentityMergeAdmin(admin.ModelAdmin):
    list_display = ("__str__", "merged", "survivor", "method", "confidence", "created_at", "undone_at")
    list_filter = ("method", ("undone_at", admin.EmptyFieldListFilter))
    list_select_related = ("merged", "survivor")
    search_fields = ("=merged__key", "=survivor__key")
    date_hierarchy = "created_at"
    fields = ("merged", "survivor", "method", "reason", "confidence", "events_moved", "moved_edges", "created_at",
              "created_by", "undone_at", "undone_by", "undo_reason")
    readonly_fields = fields
    actions = ["undo_selected"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the journal is the only way back; undo instead

    @admin.display(description=_("events moved"))
    def events_moved(self, obj):
        return len(obj.moved_event_ids)

    def has_undo_permission(self, request):
        return request.user.has_perm("profiles.change_identitymerge")

    @admin.action(description=_("Undo selected merges"), permissions=["undo"])
    def undo_selected(self, request, queryset):
        undone = 0
        # Newest first: a later merge that builds on an earlier one is undone before it.
        for merge in queryset.order_by("-created_at", "-id"):
            try:
                identity_merge_undo(merge=merge, reason="undone in the admin", user=request.user)
            except IdentityMergeRefused as exc:
                self.message_user(request, _("Merge #%(id)s not undone: %(reason)s") % {"id": merge.pk, "reason": exc},
                                  messages.WARNING)
            else:
                undone += 1
        if undone:
            self.message_user(
                request, ngettext("%(count)d merge undone.", "%(count)d merges undone.", undone) % {"count": undone},
                messages.SUCCESS,
            )
