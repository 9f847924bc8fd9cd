"""The Segment-Spec source: POST /v1/batch, /v1/track, /v1/identify, /v1/page, /v1/screen,
/v1/alias, /v1/group as the Segment and RudderStack SDKs send them (write key = an API token with
`events:write`, HTTP Basic or `writeKey` in the body; gzip bodies). The answers are the ones the
SDKs understand: 200 `{"success": true}`; 400 (malformed) and 401/403/413 are never retried by
them; 429 and 503 (database away, with Retry-After) are retried. Every error body carries `code`
and `message`: rudder-sdk-python reads both and retries a 4xx whose body lacks them as if the
network had failed."""

import gzip
import zlib

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from access.authentication import ApiTokenAuthentication, WriteKeyAuthentication
from access.models import Scope
from ingestion import segment_spec
from ingestion.apis import BoundedJSONParser, PayloadTooLarge
from ingestion.services import BatchRejected
from pipeline.flows import segment_batch_ingest
from profiles.tasks import refresh_outbox_queue_on_commit

API_SOURCE = "default"  # the same namespace as POST /api/v1/events: a userId is a customer_id


class SpecJSONParser(BoundedJSONParser):
    """JSON of at most BATCH_MAX_BYTES once inflated; `Content-Encoding: gzip` bodies are inflated
    in bounded steps, so a small compressed bomb cannot fill memory."""

    limit = segment_spec.BATCH_MAX_BYTES

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        body = stream.read(self.limit + 1) if stream is not None else b""
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding == "gzip":
            body = self._inflated(body, stream)
        elif encoding not in ("", "identity"):
            raise exceptions.UnsupportedMediaType(f"Content-Encoding {encoding}")
        if len(body) > self.limit:
            raise PayloadTooLarge(f"Body exceeds the Segment Spec's limit of {self.limit} bytes.")
        return self.json_parse(body, media_type, parser_context)

    def _inflated(self, head: bytes, stream) -> bytes:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer
        out = bytearray()
        chunk = head
        try:
            while chunk:
                out += inflater.decompress(chunk, self.limit + 1 - len(out))
                if len(out) > self.limit:
                    break
                chunk = inflater.unconsumed_tail or stream.read(64 * 1024)
            if len(out) <= self.limit and not inflater.eof:
                raise exceptions.ParseError("gzip body is truncated.")
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise exceptions.ParseError(f"Body is not valid gzip: {exc}") from exc
        return bytes(out)


class SpecApi(APIView):
    authentication_classes = [WriteKeyAuthentication, ApiTokenAuthentication]
    parser_classes = [SpecJSONParser]
    required_scopes = (Scope.EVENTS_WRITE,)
    message_type: str | None = None  # None: /v1/batch

    def handle_exception(self, exc):
        if isinstance(exc, BatchRejected):
            return Response({"success": False, "code": "invalid_batch",
                             "message": f"{len(exc.errors)} invalid message(s); nothing was stored.",
                             "errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
        response = super().handle_exception(exc)
        data = response.data if isinstance(response.data, dict) else {}
        # config.api_errors gives {"error": code, "detail": text}; a ValidationError stays {field: [reasons]}
        code = data.get("error") or ("invalid" if "detail" not in data else getattr(data["detail"], "code", "error"))
        message = str(data.get("detail") or data)
        response.data = {"success": False, "code": str(code), "message": message}
        return response

    def messages(self, request) -> list:
        body = request.data
        if not isinstance(body, dict):
            raise exceptions.ValidationError({"body": ["must be a JSON object"]})
        if self.message_type is None:
            batch = body.get("batch")
            if not isinstance(batch, list):
                raise exceptions.ValidationError({"batch": ["required: a list of messages"]})
            shared = {k: v for k, v in body.items() if k in ("context", "integrations")}
            return [{**shared, **m} if isinstance(m, dict) else m for m in batch]
        return [{**body, "type": self.message_type}]

    def post(self, request):
        messages = self.messages(request)
        oversize = [i for i, m in enumerate(messages)
                    if segment_spec.message_size(m) > segment_spec.MESSAGE_MAX_BYTES]
        if oversize:
            raise PayloadTooLarge(f"Message(s) {oversize[:10]} exceed the Segment Spec's limit of "
                                  f"{segment_spec.MESSAGE_MAX_BYTES} bytes each.")
        result = segment_batch_ingest(messages=messages, source=API_SOURCE, received_at=timezone.now())
        refresh_outbox_queue_on_commit(ids=result.outbox_ids)
        events = result.events
        return Response({
            "success": True,
            "received": result.received,
            "inserted": events.inserted if events else 0,
            "duplicates": events.duplicates if events else 0,
            "refused": events.refused if events else 0,
            "customers": result.customers_written,
            "merges": result.merges,
            "merges_refused": result.merges_refused,
        })


_OUTPUT = inline_serializer("SpecAccepted", {
    "success": serializers.BooleanField(),
    "received": serializers.IntegerField(help_text="Messages in the request."),
    "inserted": serializers.IntegerField(help_text="New events stored (an order with products: one per line)."),
    "duplicates": serializers.IntegerField(help_text="Events whose messageId was stored already (a retried batch)."),
    "refused": serializers.IntegerField(help_text="Events of suppressed subjects, not stored."),
    "customers": serializers.IntegerField(help_text="Customers written from identify traits."),
    "merges": serializers.IntegerField(help_text="Identities linked by identify or alias."),
    "merges_refused": serializers.IntegerField(help_text="Links refused (a suppressed subject, or already merged elsewhere)."),
})
_ERROR = inline_serializer("SpecError", {
    "success": serializers.BooleanField(), "code": serializers.CharField(), "message": serializers.CharField(),
    "errors": serializers.ListField(child=serializers.DictField(), required=False,
                                    help_text="Each bad message by index with its field errors."),
})
_RESPONSES = {
    200: _OUTPUT,
    400: OpenApiResponse(_ERROR, description="Malformed JSON or messages; nothing stored. SDKs do not retry it."),
    401: OpenApiResponse(_ERROR, description="No, invalid, expired or revoked write key."),
    403: OpenApiResponse(_ERROR, description="The write key's token lacks events:write."),
    413: OpenApiResponse(_ERROR, description="Body over 500 KB (inflated) or a message over 32 KB."),
    415: OpenApiResponse(_ERROR, description="A Content-Encoding other than gzip."),
    429: OpenApiResponse(_ERROR, description="Throttled; SDKs retry after Retry-After."),
    503: OpenApiResponse(description="Database away; SDKs retry after Retry-After."),
}
def _message_fields(message_type: str | None) -> dict:
    fields = {
        "userId": serializers.CharField(required=False, help_text="The customer's external id."),
        "anonymousId": serializers.CharField(required=False, help_text="A visitor not yet identified."),
        "messageId": serializers.CharField(required=False, help_text="Becomes the event id."),
        "timestamp": serializers.CharField(required=False, help_text="ISO 8601; else originalTimestamp, else now."),
        "context": serializers.DictField(required=False, help_text="Not kept (except context.traits on identify)."),
        "writeKey": serializers.CharField(required=False, help_text="The write key, when not sent as HTTP Basic."),
    }
    if message_type is None:
        fields["type"] = serializers.ChoiceField(segment_spec.MESSAGE_TYPES)
    if message_type in (None, "track"):
        fields["event"] = serializers.CharField(required=False, help_text="A track call's event name.")
    if message_type in (None, "page", "screen"):
        fields["name"] = serializers.CharField(required=False)
    if message_type in (None, "track", "page", "screen"):
        fields["properties"] = serializers.DictField(required=False)
    if message_type in (None, "identify", "group"):
        fields["traits"] = serializers.DictField(required=False)
    if message_type in (None, "alias"):
        fields["previousId"] = serializers.CharField(required=False, help_text="The id merged into userId.")
    return fields


def _spec_view(message_type: str | None, summary: str, description: str):
    name = (message_type or "batch").title()
    if message_type is None:
        request = inline_serializer("SpecBatch", {
            "batch": serializers.ListField(child=inline_serializer("SpecMessage", _message_fields(None))),
            "writeKey": serializers.CharField(required=False),
        })
    else:
        request = inline_serializer(f"Spec{name}", _message_fields(message_type))

    def post(self, request):
        return SpecApi.post(self, request)

    return type(f"Spec{name}Api", (SpecApi,), {
        "message_type": message_type,
        "post": extend_schema(summary=summary, description=description, request=request, responses=_RESPONSES,
                              tags=["segment-spec"], operation_id=f"segment_spec_{message_type or 'batch'}")(post),
    })


_COMMON = ("Write key: an API token with events:write, as the HTTP Basic user name (empty password) or "
           "`writeKey` in the body. `Content-Encoding: gzip` accepted. All or nothing: a 400 lists each bad "
           "message by index. `messageId` is the event id, so a retried request is counted in `duplicates`.")
SpecBatchApi = _spec_view(None, "Segment Spec: a batch of track, identify, page, screen, alias and group calls",
                          "Up to 500 KB (inflated), 32 KB per message. " + _COMMON)
SpecTrackApi = _spec_view("track", "Segment Spec: track", _COMMON)
SpecIdentifyApi = _spec_view("identify", "Segment Spec: identify (traits → customer; with anonymousId: merge)", _COMMON)
SpecPageApi = _spec_view("page", "Segment Spec: page", _COMMON)
SpecScreenApi = _spec_view("screen", "Segment Spec: screen", _COMMON)
SpecAliasApi = _spec_view("alias", "Segment Spec: alias (previousId merged into userId)", _COMMON)
SpecGroupApi = _spec_view("group", "Segment Spec: group (accepted, not stored)", _COMMON)
