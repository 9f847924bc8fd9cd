"""REST reads of profiles (scope `profiles:read`)."""

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from ingestion.identity import customer_key
from profiles import selectors

API_SOURCE = "default"
_PSEUDONYM = re.compile(r"[0-9a-f]{64}")


class ProfileDetailApi(APIView):
    required_scopes = (Scope.PROFILES_READ,)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Profile"

        key = serializers.CharField(source="customer.key", help_text="The customer's pseudonymous key.")
        value_tier = serializers.CharField()
        lifecycle_stage = serializers.CharField()
        traits = serializers.JSONField()
        explanation = serializers.JSONField(help_text="Top categories and the traits furthest from the population.")
        feature_set_version = serializers.IntegerField(source="feature_set.version")
        model_version = serializers.IntegerField(source="model_version_id", allow_null=True)
        events_included = serializers.IntegerField()
        last_event_at = serializers.DateTimeField(allow_null=True)
        watermark = serializers.DateTimeField(allow_null=True, help_text="Ingestion time of the newest event included.")
        computed_at = serializers.DateTimeField()

    @extend_schema(
        summary="A customer's profile",
        description=(
            "Look up by the customer's pseudonymous key (64 hex characters), or with `by=external_id` by the "
            "external id the app sent its events with."
        ),
        parameters=[
            OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH),
            OpenApiParameter("by", OpenApiTypes.STR, enum=["key", "external_id"], required=False),
        ],
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="Malformed key or `by`."),
            403: OpenApiResponse(description="Token lacks profiles:read."),
            404: OpenApiResponse(description="No profile for this customer."),
        },
    )
    def get(self, request, key: str):
        by = request.query_params.get("by", "key")
        if by == "external_id":
            if not key or len(key) > 256 or "\x00" in key:
                raise exceptions.ValidationError({"key": ["An external id is 1 to 256 characters without NUL."]})
            key = customer_key(source=API_SOURCE, external_id=key)
        elif by != "key":
            raise exceptions.ValidationError({"by": ["Must be 'key' or 'external_id'."]})
        elif not _PSEUDONYM.fullmatch(key):
            raise exceptions.ValidationError({"key": ["A key is 64 lowercase hex characters."]})
        profile = selectors.profile_get(key=key)
        if profile is None:
            raise exceptions.NotFound("No profile for this customer.")
        return Response(self.OutputSerializer(profile).data)
