from django.urls import path

from segments import apis

urlpatterns = [
    path("segments", apis.SegmentListApi.as_view(), name="segments"),
    path("segments/sizes", apis.SegmentSizesApi.as_view(), name="segments-sizes"),
    path("segments/clusters", apis.SegmentClustersApi.as_view(), name="segments-clusters"),
    path("segments/rules/check", apis.RuleValidateApi.as_view(), name="segments-rule-check"),
    path("segments/<int:segment_id>", apis.SegmentDetailApi.as_view(), name="segment-detail"),
    path("segments/<int:segment_id>/refresh", apis.SegmentRefreshApi.as_view(), name="segment-refresh"),
    path("segments/<int:segment_id>/members", apis.SegmentMembersApi.as_view(), name="segment-members"),
    path("segments/<int:segment_id>/members.csv", apis.SegmentExportApi.as_view(), name="segment-export"),
]
