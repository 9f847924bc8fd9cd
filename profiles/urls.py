from django.urls import path

from profiles import apis

urlpatterns = [
    path("profiles/<str:key>", apis.ProfileDetailApi.as_view(), name="profile-detail"),
]
