"""Dead-lettered tasks in the admin: what was given up on, with its arguments and error; operators
queue it again once the cause is fixed, or delete it."""

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from config.celery import BROKER_ERRORS
from pipeline.models import DeadLetter
from pipeline.tasks import dead_letters_requeue


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("task_name", "deliveries", "error_line", "created_at")
    list_filter = ("task_name",)
    search_fields = ("task_name", "task_id", "error")
    readonly_fields = ("task_name", "task_id", "args", "kwargs", "deliveries", "error", "created_at")
    fields = readonly_fields
    actions = ["requeue"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("error"))
    def error_line(self, obj):
        first = (obj.error or "").strip().splitlines()
        return first[0][:160] if first else "—"

    @admin.action(description=_("Queue again (after fixing the cause) and remove from this list"),
                  permissions=["delete"])
    def requeue(self, request, queryset):
        try:
            queued = dead_letters_requeue(letters=list(queryset))
        except BROKER_ERRORS as exc:
            self.message_user(request, _("Not queued: the broker is unavailable (%(error)s).") % {"error": exc},
                              messages.ERROR)
            return
        self.message_user(request, ngettext("%(n)d task queued again.", "%(n)d tasks queued again.", queued)
                          % {"n": queued}, messages.SUCCESS)
