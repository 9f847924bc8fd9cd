"""REST API of privacy requests (scope `compliance`): file, verify, execute, read the receipt,
download an access export. Execution runs in the request: an erasure takes well under a second
(bench/erasure.py), and the caller gets the receipt at once."""

import io

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from config.api_errors import error_class
from config.pagination import BoundedPageNumberPagination
from ingestion.apis import BoundedJSONParser
from privacy import services
from privacy.export import access_export_open
from privacy.models import PrivacyRequest, RequestKind


class PrivacyRequestSerializer(serializers.ModelSerializer):
    error = serializers.SerializerMethodField(help_text="The class of the last attempt's failure; the admin has the text.")

    def get_error(self, request) -> str:
        return error_class(request.error)

    class Meta:
        model = PrivacyRequest
        ref_name = "PrivacyRequest"
        fields = ("id", "kind", "state", "source", "subject_token", "note", "filed_by", "verified_by", "executed_by",
                  "closed_by", "created_at", "verified_at", "executed_at", "completed_at", "closed_at", "attempts", "error",
                  "receipt", "export_expires_at")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def _transition(call):
    try:
        return call()
    except services.RequestError as error:
        raise Conflict(str(error)) from None


class PrivacyRequestListApi(APIView):
    parser_classes = [BoundedJSONParser]
    pagination_class = BoundedPageNumberPagination
    required_scopes = (Scope.COMPLIANCE,)

    class InputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=RequestKind.values)
        external_id = serializers.CharField(max_length=256, help_text="The subject's id as the shop's events carry it.")
        source = serializers.CharField(max_length=32, default="default")
        note = serializers.CharField(max_length=2000, required=False, default="", help_text="No personal data.")

        class Meta:
            ref_name = "PrivacyRequestInput"

        def validate_external_id(self, value: str) -> str:
            if "\x00" in value:
                raise serializers.ValidationError("NUL is not allowed.")
            return value

    @extend_schema(summary="Privacy requests", responses={200: PrivacyRequestSerializer(many=True)})
    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(PrivacyRequest.objects.all(), request, view=self)
        return paginator.get_paginated_response(PrivacyRequestSerializer(page, many=True).data)

    @extend_schema(
        summary="File a privacy request (erasure, access export, restriction, lift suppression)",
        description="The external id is matched through keyed tokens and never stored in clear.",
        request=InputSerializer,
        responses={201: PrivacyRequestSerializer, 400: OpenApiResponse(description="Invalid input."),
                   403: OpenApiResponse(description="Token lacks compliance.")},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        filed = services.privacy_request_file(kind=data["kind"], source=data["source"], external_id=data["external_id"],
                                              actor=request.user, note=data["note"])
        return Response(PrivacyRequestSerializer(filed).data, status=status.HTTP_201_CREATED)


class PrivacyRequestDetailApi(APIView):
    required_scopes = (Scope.COMPLIANCE,)

    @extend_schema(summary="A privacy request with its receipt",
                   responses={200: PrivacyRequestSerializer, 404: OpenApiResponse(description="No such request.")})
    def get(self, request, request_id: int):
        return Response(PrivacyRequestSerializer(get_object_or_404(PrivacyRequest, pk=request_id)).data)


class PrivacyRequestVerifyApi(APIView):
    required_scopes = (Scope.COMPLIANCE,)

    @extend_schema(summary="Mark the requester verified as the subject", request=None,
                   responses={200: PrivacyRequestSerializer, 404: OpenApiResponse(description="No such request."),
                              409: OpenApiResponse(description="Not in state received.")})
    def post(self, request, request_id: int):
        filed = get_object_or_404(PrivacyRequest, pk=request_id)
        done = _transition(lambda: services.privacy_request_verify(request=filed, actor=request.user))
        return Response(PrivacyRequestSerializer(done).data)


class PrivacyRequestExecuteApi(APIView):
    required_scopes = (Scope.COMPLIANCE,)

    @extend_schema(summary="Carry out a verified request (or retry a partially failed one)", request=None,
                   responses={200: PrivacyRequestSerializer, 404: OpenApiResponse(description="No such request."),
                              409: OpenApiResponse(description="Not verified, or already completed.")})
    def post(self, request, request_id: int):
        filed = get_object_or_404(PrivacyRequest, pk=request_id)
        try:
            done = _transition(lambda: services.privacy_request_execute(request=filed, actor=request.user))
        except Conflict:
            raise
        except Exception:  # recorded on the request as partially failed; a retry completes it
            filed.refresh_from_db()
            return Response(PrivacyRequestSerializer(filed).data, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(PrivacyRequestSerializer(done).data)


class PrivacyRequestExportApi(APIView):
    required_scopes = (Scope.COMPLIANCE,)

    @extend_schema(summary="Download the access export (zip of subject.json and events.csv)",
                   responses={(200, "application/zip"): OpenApiTypes.BINARY,
                              404: OpenApiResponse(description="No export for this request, or it expired.")})
    def get(self, request, request_id: int):
        filed = get_object_or_404(PrivacyRequest, pk=request_id, kind=RequestKind.ACCESS_EXPORT)
        archive = access_export_open(request=filed)
        if archive is None:
            raise exceptions.NotFound("No export for this request, or it expired.")
        from privacy.audit import audit_record

        audit_record(action="privacy_request.export_downloaded", actor=request.user, target=filed)
        return FileResponse(io.BytesIO(archive), as_attachment=True, filename=f"access-{filed.pk}.zip",
                            content_type="application/zip")
