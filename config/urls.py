from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz

admin.site.site_header = _("Portrait — customer profiles")
admin.site.site_title = _("Portrait")
admin.site.index_title = _("Operations")
admin.site.site_url = None  # "/" only redirects back to the admin

# A lost database answers 503 with Retry-After, not 500, wherever it is noticed.
handler500 = "config.db_unavailable.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("ingestion.urls")),
    path("api/v1/", include("profiles.urls")),
    path("api/v1/", include("segments.urls")),
    path("api/v1/", include("privacy.urls")),
    path("api/v1/", include("crm.urls")),
    path("v1/", include("ingestion.segment_urls")),  # the Segment-Spec source (README "REST")
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[], authentication_classes=[]),
        name="api-docs",
    ),
    path("i18n/", include("django.conf.urls.i18n")),
    path("healthz", healthz, name="healthz"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
