from django.urls import path

from ingestion import apis

urlpatterns = [
    path("events", apis.EventBatchApi.as_view(), name="events-batch"),
    path("customers", apis.CustomerUpsertApi.as_view(), name="customers-upsert"),
    path("items", apis.ItemUpsertApi.as_view(), name="items-upsert"),
    path("social-edges", apis.SocialEdgeUpsertApi.as_view(), name="social-edges-upsert"),
]
