"""The Segment-Spec source, mounted at /v1/ where the SDKs post (their `host` is this server's origin)."""

from django.urls import path

from ingestion import segment_apis

urlpatterns = [
    path("batch", segment_apis.SpecBatchApi.as_view(), name="segment-batch"),
    path("track", segment_apis.SpecTrackApi.as_view(), name="segment-track"),
    path("identify", segment_apis.SpecIdentifyApi.as_view(), name="segment-identify"),
    path("page", segment_apis.SpecPageApi.as_view(), name="segment-page"),
    path("screen", segment_apis.SpecScreenApi.as_view(), name="segment-screen"),
    path("alias", segment_apis.SpecAliasApi.as_view(), name="segment-alias"),
    path("group", segment_apis.SpecGroupApi.as_view(), name="segment-group"),
]
