"""REST entrances for events, customers, items and social edges (scope `events:write`)."""

import io
import re
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from ingestion import row_validation
from ingestion import selectors, services
from ingestion.cleaning import EVENT_TYPE_ALIASES
from profiles.tasks import refresh_outbox_queue_on_commit


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


_LONE_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"  # high without low
    rb"|(?<![\\]u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # low without high
)


class BoundedJSONParser(JSONParser):
    """JSON parser that also bounds bodies sent without Content-Length (chunked), which Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE check cannot see; declared oversize bodies are refused earlier
    (config.api_errors maps Django's RequestDataTooBig to 413)."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise PayloadTooLarge(f"Body exceeds the limit of {limit} bytes.")
        return self.json_parse(body, media_type, parser_context)

    def json_parse(self, body: bytes, media_type=None, parser_context=None):
        """JSON of a body already read and bounded."""
        # JSON may escape half of a UTF-16 surrogate pair ("\ud800"); Python accepts it, but no
        # UTF-8 text (and so no database) can hold it.
        if _LONE_SURROGATE.search(body):
            raise exceptions.ParseError("JSON contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff).")
        return super().parse(io.BytesIO(body), media_type, parser_context)


def _check_batch(rows, name: str, limit: int):
    if not isinstance(rows, list):
        raise exceptions.ValidationError({name: ["Expected a list."]})
    if len(rows) > limit:
        raise PayloadTooLarge(f"The batch has {len(rows)} {name}; the limit is {limit} per request.")
    if not rows:
        raise exceptions.ValidationError({name: ["Must not be empty."]})


class InvalidBatch(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_batch"

    def __init__(self, rows: list[dict]):
        super().__init__(f"{len(rows)} invalid row(s); nothing was stored.")
        self.rows = rows


def _invalid_batch_response(exc: InvalidBatch) -> Response:
    return Response({"error": "invalid_batch", "detail": str(exc.detail), "rows": exc.rows}, status=exc.status_code)


def _validated_rows(serializer_class, rows: list) -> list[dict]:
    serializer = serializer_class(data=rows, many=True)
    if serializer.is_valid():
        return serializer.validated_data
    errors = serializer.errors
    by_index = errors.items() if isinstance(errors, dict) else enumerate(errors)  # DRF ≥ 3.16 returns a dict
    bad = [{"index": int(i), "errors": e} for i, e in sorted(by_index) if e]
    raise InvalidBatch(bad)


class BatchApi(APIView):
    """Common contract of the batch endpoints: bounded JSON body, all-or-nothing, row errors by index."""

    parser_classes = [BoundedJSONParser]
    required_scopes = (Scope.EVENTS_WRITE,)

    def handle_exception(self, exc):
        if isinstance(exc, InvalidBatch):
            return _invalid_batch_response(exc)
        return super().handle_exception(exc)


class EventBatchApi(BatchApi):
    class OutputSerializer(serializers.Serializer):
        received = serializers.IntegerField()
        inserted = serializers.IntegerField()
        duplicates = serializers.IntegerField(help_text="Event ids already stored or repeated in the batch.")
        removed = serializers.IntegerField(help_text="Near-duplicate noise dropped by cleaning.")
        flagged = serializers.IntegerField(help_text="Stored with a bot or price-outlier flag.")
        refused = serializers.IntegerField(help_text="Not stored: the subject asked us to stop processing their data.")

    @extend_schema(
        summary="Ingest a batch of events (atomic)",
        description=(
            f"Up to API_MAX_BATCH_EVENTS (default {settings.API_MAX_BATCH_EVENTS:,}) events. Either every event is "
            "valid and the batch is stored in one transaction, or nothing is stored and the 400 lists each bad "
            "row by index with its field errors. Re-sending an event id is not an error: it is counted in "
            f"`duplicates`. Event types: {', '.join(sorted(EVENT_TYPE_ALIASES))}. Each event names its customer by "
            "`customer_id`, or, for a visitor not yet identified, by `anonymous_id` (not both); `POST /identify` "
            "later links the two. The profiles of the customers that got new events are refreshed in the background."
        ),
        request=inline_serializer("EventBatch", {"events": serializers.ListField(child=serializers.DictField())}),
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="Invalid rows; nothing written."),
            401: OpenApiResponse(description="No or invalid token."),
            403: OpenApiResponse(description="Token lacks events:write."),
            413: OpenApiResponse(description="Body or batch over the limit."),
        },
    )
    def post(self, request):
        if not isinstance(request.data, dict) or "events" not in request.data:
            raise exceptions.ValidationError({"events": ["This field is required."]})
        rows = request.data["events"]
        _check_batch(rows, "events", settings.API_MAX_BATCH_EVENTS)
        try:
            result = services.events_ingest_batch(rows=rows)
        except services.BatchRejected as rejected:
            raise InvalidBatch(rejected.errors) from rejected
        # the refresh is owed in the outbox, stored with the events (README "Reliability")
        refresh_outbox_queue_on_commit(ids=[result.outbox_id])
        return Response(self.OutputSerializer(result).data)


class RowUpsertApi(BatchApi):
    """POST {<envelope>: [rows]}: every row validated by `row_validator`, then all upserted in one
    transaction by `upsert_rows`, or none and a 400 listing the bad rows."""

    envelope: str
    row_validator: type[serializers.Serializer]
    upsert_rows: Callable[[list[dict]], int]  # each endpoint names its service
    max_rows = 5000

    def post(self, request):
        rows = request.data.get(self.envelope) if isinstance(request.data, dict) else None
        _check_batch(rows, self.envelope, self.max_rows)
        validated = _validated_rows(self.row_validator, rows)
        with transaction.atomic():
            written = self.upsert_rows(validated)
        return Response({"written": written})


def _upsert_schema(envelope: str, validator, summary: str):
    return extend_schema_view(post=extend_schema(
        summary=summary,
        request=inline_serializer(f"{envelope.title()}Batch", {envelope: validator(many=True)}),
        responses={
            200: inline_serializer(f"{envelope.title()}Written", {"written": serializers.IntegerField()}),
            400: OpenApiResponse(description="Invalid rows by index; nothing written."),
            413: OpenApiResponse(description="More rows than the limit."),
        },
    ))


@_upsert_schema("customers", row_validation.CustomerRow, "Create or update customers by external id (atomic)")
class CustomerUpsertApi(RowUpsertApi):
    envelope = "customers"
    row_validator = row_validation.CustomerRow

    def upsert_rows(self, rows):
        written = services.customers_upsert(rows=rows, source="default")
        # attributes are traits too: refresh the profiles of the customers that have one
        ids = selectors.customer_ids_by_external_id(source="default", external_ids=[r["external_id"] for r in rows])
        refresh_outbox_queue_on_commit(ids=[services.refresh_outbox_add(customer_ids=ids)])
        return written


@_upsert_schema("items", row_validation.ItemRow, "Create or update catalogue items by SKU (atomic)")
class ItemUpsertApi(RowUpsertApi):
    envelope = "items"
    row_validator = row_validation.ItemRow

    def upsert_rows(self, rows):
        return services.items_upsert(rows=rows)


@_upsert_schema("edges", row_validation.SocialEdgeRow, "Add social edges: follow, referral, share (atomic)")
class SocialEdgeUpsertApi(RowUpsertApi):
    envelope = "edges"
    row_validator = row_validation.SocialEdgeRow

    def upsert_rows(self, rows):
        return services.social_edges_upsert(rows=rows, source="default")
