"""Category demand for supply-planning apps: the latest forecast, per category and week."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from config.db_router import replica_reads
from crm.selectors import demand_forecast_latest, demand_table


class CategoryDemandApi(APIView):
    required_scopes = (Scope.PROFILES_READ,)

    class CategorySerializer(serializers.Serializer):
        category = serializers.CharField()
        expected = serializers.ListField(child=serializers.FloatField(), help_text="Expected purchase lines per week.")
        total = serializers.FloatField()
        seasonal_naive_total = serializers.FloatField(help_text="The baseline: the same weeks one season earlier.")

        class Meta:
            ref_name = "CategoryDemandRow"

    class OutputSerializer(serializers.Serializer):
        made_at = serializers.DateTimeField()
        data_up_to = serializers.DateTimeField()
        weeks = serializers.ListField(child=serializers.DateField(), help_text="First day of each forecast week.")
        categories = serializers.ListField(child=serializers.DictField(), help_text="Largest total first.")
        backtest = serializers.JSONField(help_text="The method one forecast length ago: MAPE of ours and of naive.")

        class Meta:
            ref_name = "CategoryDemand"

    @extend_schema(
        summary="Expected purchases per category for the coming weeks",
        description=("From each customer's forecast purchases, their category preferences and the recent arrival of new "
                     "customers; made with every CLV fit (nightly after the batch build, or from the admin)."),
        responses={200: OutputSerializer, 403: OpenApiResponse(description="Token lacks profiles:read."),
                   404: OpenApiResponse(description="No forecast has been made yet.")},
    )
    @replica_reads
    def get(self, request):
        forecast = demand_forecast_latest()
        if forecast is None:
            raise exceptions.NotFound("No category demand forecast yet: the CLV model has not been fitted.")
        weeks, table = demand_table(forecast=forecast)
        backtest = {key: value for key, value in forecast.backtest.items() if key in ("model_mape", "naive_mape", "skipped")}
        return Response(self.OutputSerializer({
            "made_at": forecast.created_at, "data_up_to": forecast.cutoff, "weeks": weeks,
            "categories": [self.CategorySerializer({
                "category": row["category"], "expected": [round(v, 3) for v in row["series"]],
                "total": round(row["total"], 3), "seasonal_naive_total": round(row["naive_total"], 3)}).data
                for row in table],
            "backtest": backtest,
        }).data)
