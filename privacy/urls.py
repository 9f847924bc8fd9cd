from django.urls import path

from privacy import apis

urlpatterns = [
    path("privacy/requests", apis.PrivacyRequestListApi.as_view(), name="privacy-requests"),
    path("privacy/requests/<int:request_id>", apis.PrivacyRequestDetailApi.as_view(), name="privacy-request"),
    path("privacy/requests/<int:request_id>/verify", apis.PrivacyRequestVerifyApi.as_view(), name="privacy-request-verify"),
    path("privacy/requests/<int:request_id>/execute", apis.PrivacyRequestExecuteApi.as_view(),
         name="privacy-request-execute"),
    path("privacy/requests/<int:request_id>/export", apis.PrivacyRequestExportApi.as_view(), name="privacy-request-export"),
]
