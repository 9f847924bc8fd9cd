from django.contrib import admin

from profiles.models import Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("customer", "model_version", "computed_at")
    raw_id_fields = ("customer",)
    show_full_result_count = False
