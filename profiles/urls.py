from django.urls import path

from profiles import apis, identity_apis

urlpatterns = [
    path("profiles/<str:key>", apis.ProfileDetailApi.as_view(), name="profile-detail"),
    path("profiles/<str:key>/similar", apis.ProfileSimilarApi.as_view(), name="profile-similar"),
    path("profiles/<str:key>/recommendations", apis.ProfileRecommendationsApi.as_view(), name="profile-recommendations"),
    path("similar", apis.LookalikeApi.as_view(), name="lookalike"),
    path("identify", identity_apis.IdentifyApi.as_view(), name="identify"),
]
