from django.urls import path

from crm import apis

urlpatterns = [
    path("demand/categories", apis.CategoryDemandApi.as_view(), name="demand-categories"),
]
