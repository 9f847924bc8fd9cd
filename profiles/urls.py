from django.urls import path

from profiles import apis, identity_apis

urlpatterns = [
    path("profiles/<str:key>", apis.ProfileDetailApi.as_view(), name="profile-detail"),
    path("identify", identity_apis.IdentifyApi.as_view(), name="identify"),
]
