"""POST /api/v1/identify: an app links an anonymous visitor to a known customer (scope `events:write`)."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from ingestion.apis import BoundedJSONParser
from profiles import merges

API_SOURCE = "default"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class IdentifyApi(APIView):
    parser_classes = [BoundedJSONParser]
    required_scopes = (Scope.EVENTS_WRITE,)

    class InputSerializer(serializers.Serializer):
        anonymous_id = serializers.CharField(max_length=256, help_text="The id the visitor's events carried as `anonymous_id`.")
        customer_id = serializers.CharField(max_length=256, help_text="The customer's external id, as events carry it.")

        class Meta:
            ref_name = "IdentifyInput"

    class OutputSerializer(serializers.Serializer):
        merge_id = serializers.IntegerField(source="pk", help_text="The journal entry of the merge.")
        customer_key = serializers.CharField(source="survivor.key", help_text="The customer's pseudonymous key.")
        events_moved = serializers.SerializerMethodField(help_text="Events of the visitor now counted as the customer's.")

        class Meta:
            ref_name = "IdentifyResult"

        def get_events_moved(self, merge) -> int:
            return len(merge.moved_event_ids)

    @extend_schema(
        summary="Link an anonymous visitor to a known customer",
        description=(
            "Merges the visitor's events, social edges and profile into the customer's (created if new) and "
            "journals the merge, which an operator can undo. Repeating the same pair returns the same merge."
        ),
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="Missing or malformed ids."),
            403: OpenApiResponse(description="Token lacks events:write."),
            404: OpenApiResponse(description="No event ever carried this anonymous id."),
            409: OpenApiResponse(description="Already merged into another customer, or the identities cannot be merged."),
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            merge = merges.identify_call(source=API_SOURCE, **serializer.validated_data)
        except merges.AnonymousIdUnknown as exc:
            raise exceptions.NotFound("Unknown anonymous id.") from exc
        except merges.IdentitySuppressed as exc:
            raise Conflict("identity cannot be merged", code="merge_refused") from exc
        except merges.IdentityAlreadyMerged as exc:
            raise Conflict("Already merged into another customer.", code="already_merged") from exc
        except merges.IdentityMergeRefused as exc:
            raise Conflict("identity cannot be merged", code="merge_refused") from exc
        return Response(self.OutputSerializer(merge).data)
