"""REST API of segments: read with `profiles:read`, create, refresh and delete with `segments:write`;
exact sizes, trends, member lists and rule counts only with `segments:exact` (without it a client has
the differentially private sizes, under a per-token budget)."""

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import ApiToken, Scope
from access.services import PrivacyBudgetExhausted, api_token_privacy_spend
from config.api_errors import error_class
from config.db_router import replica_reads
from config.pagination import BoundedPageNumberPagination
from ingestion.apis import BoundedJSONParser
from privacy.dp import dp_counts
from profiles import selectors as profile_selectors
from segments import selectors, services
from segments.models import Segment, SegmentKind
from segments.rules import FIELDS, RuleError
from segments.tasks import segment_refresh_queue

_READ_WRITE = {"GET": (Scope.PROFILES_READ,), "POST": (Scope.SEGMENTS_WRITE,), "DELETE": (Scope.SEGMENTS_WRITE,)}


class SegmentSerializer(serializers.ModelSerializer):
    """A segment; its exact size and trend only when the context says `exact` (segments:exact)."""

    size = serializers.SerializerMethodField(help_text="Member count; null without segments:exact.")
    trend = serializers.SerializerMethodField(
        help_text="Size after each of the last 30 refreshes; null without segments:exact.",
    )
    error = serializers.SerializerMethodField(help_text="The class of the last refresh's failure; the admin has the text.")

    class Meta:
        model = Segment
        ref_name = "Segment"
        fields = ("id", "name", "kind", "rule", "description", "status", "size", "error", "created_at", "refreshed_at",
                  "trend")

    def get_error(self, segment) -> str:
        return error_class(segment.error)

    def get_size(self, segment) -> int | None:
        return segment.size if self.context.get("exact") else None

    def get_trend(self, segment) -> list[dict] | None:
        if not self.context.get("exact"):
            return None
        return [{"size": t["size"], "taken_at": t["taken_at"].isoformat()} for t in selectors.segment_trend(segment=segment)]


def _token_of(request):
    """The API token behind the request (segment limits are per token)."""
    return request.auth if isinstance(request.auth, ApiToken) else None


def _may_see_exact(request) -> bool:
    return Scope.SEGMENTS_EXACT in request.user.scopes


def _segment_data(request, segments, *, many: bool = False):
    return SegmentSerializer(segments, many=many, context={"exact": _may_see_exact(request)}).data


def _rule_error(error: RuleError) -> exceptions.ValidationError:
    return exceptions.ValidationError({"rule": [str(error)]})


class SegmentListApi(APIView):
    parser_classes = [BoundedJSONParser]
    pagination_class = BoundedPageNumberPagination
    required_scopes = _READ_WRITE

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        kind = serializers.ChoiceField(choices=[SegmentKind.RULE.value, SegmentKind.LOOKALIKE.value])
        rule = serializers.CharField(required=False, max_length=2000, help_text="Rule segments: the filter.")
        seed_keys = serializers.ListField(
            child=serializers.RegexField(r"^[0-9a-f]{64}$", max_length=64), required=False, min_length=1,
            max_length=settings.API_MAX_SEEDS, help_text="Lookalike segments: pseudonymous keys of the seed.",
        )
        size = serializers.IntegerField(required=False, default=1000, min_value=1, max_value=settings.SEGMENT_MAX_LOOKALIKE)
        method = serializers.ChoiceField(choices=profile_selectors.LOOKALIKE_METHODS, default="centroid")
        space = serializers.ChoiceField(choices=list(profile_selectors.SPACES), default="fused")

        class Meta:
            ref_name = "SegmentInput"

        def validate(self, data):
            if data["kind"] == SegmentKind.RULE and not data.get("rule"):
                raise serializers.ValidationError({"rule": ["A rule segment needs a rule."]})
            if data["kind"] == SegmentKind.LOOKALIKE and not data.get("seed_keys"):
                raise serializers.ValidationError({"seed_keys": ["A lookalike segment needs seed keys."]})
            seeds = len(set(data.get("seed_keys", ())))
            if data["method"] == "multi_query" and seeds * data["size"] > settings.SEGMENT_MAX_SEARCH_ROWS:
                raise serializers.ValidationError({"size": [
                    f"multi_query runs one search per seed: seeds × size must be at most "
                    f"{settings.SEGMENT_MAX_SEARCH_ROWS} (SEGMENT_MAX_SEARCH_ROWS), not {seeds} × {data['size']}."]})
            return data

    @extend_schema(summary="Segments", responses={200: SegmentSerializer(many=True)})
    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.segments_list(), request, view=self)
        return paginator.get_paginated_response(_segment_data(request, page, many=True))

    @extend_schema(
        summary="Create a rule or lookalike segment",
        description=(
            "The segment is created `pending` and its members are computed by a worker; poll the segment until "
            "`ready`. Rule language: comparisons (`= != < <= > >= in, not in, is null, is not null`) of traits, "
            "joined with and / or / not and parentheses, e.g. `lifecycle_stage = \"active\" and monetary > 100`."
        ),
        request=InputSerializer,
        responses={201: SegmentSerializer, 400: OpenApiResponse(description="Invalid input; the body names the field."),
                   403: OpenApiResponse(description="Token lacks segments:write.")},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        token = _token_of(request)
        try:
            if data["kind"] == SegmentKind.RULE:
                segment = services.segment_create_rule(name=data["name"], rule=data["rule"], created_by_token=token)
            else:
                segment = services.segment_create_lookalike(
                    name=data["name"], seed_keys=data["seed_keys"], size=data["size"], method=data["method"],
                    space=data["space"], created_by_token=token,
                )
        except RuleError as error:
            raise _rule_error(error) from None
        except services.SegmentLimitReached as error:
            raise exceptions.ValidationError({"segments": [str(error)]}) from None
        except services.SegmentError as error:
            raise exceptions.ValidationError({"seed_keys": [str(error)]}) from None
        segment_refresh_queue(segment=segment)
        return Response(_segment_data(request, segment), status=status.HTTP_201_CREATED)


class SegmentClustersApi(APIView):
    parser_classes = [BoundedJSONParser]
    required_scopes = (Scope.SEGMENTS_WRITE,)

    class InputSerializer(serializers.Serializer):
        k = serializers.IntegerField(min_value=2, max_value=services.MAX_CLUSTERS)
        space = serializers.ChoiceField(choices=list(profile_selectors.SPACES), default="embedding")
        name_prefix = serializers.CharField(max_length=150, default="Cluster")

        class Meta:
            ref_name = "ClusterSegmentsInput"

    @extend_schema(
        summary="Create k cluster segments (k-means over profile vectors)",
        description="A worker fits k-means, then describes each cluster by its top categories and RFM medians.",
        request=InputSerializer,
        responses={201: SegmentSerializer(many=True), 400: OpenApiResponse(description="Invalid input."),
                   403: OpenApiResponse(description="Token lacks segments:write.")},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            segments = services.segments_create_clusters(**serializer.validated_data,
                                                         created_by_token=_token_of(request))
        except services.SegmentLimitReached as error:
            raise exceptions.ValidationError({"segments": [str(error)]}) from None
        segment_refresh_queue(segment=segments[0])  # one refresh fits the clustering and fills every cluster
        return Response(_segment_data(request, segments, many=True), status=status.HTTP_201_CREATED)


class SegmentDetailApi(APIView):
    required_scopes = _READ_WRITE

    @extend_schema(summary="A segment", responses={200: SegmentSerializer, 404: OpenApiResponse(description="No such segment.")})
    def get(self, request, segment_id: int):
        return Response(_segment_data(request, get_object_or_404(Segment, pk=segment_id)))

    @extend_schema(summary="Delete a segment", responses={204: None, 404: OpenApiResponse(description="No such segment.")})
    def delete(self, request, segment_id: int):
        services.segment_delete(segment=get_object_or_404(Segment, pk=segment_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SegmentRefreshApi(APIView):
    required_scopes = (Scope.SEGMENTS_WRITE,)

    class OutputSerializer(SegmentSerializer):
        refresh = serializers.ChoiceField(choices=["queued", "already_queued"], help_text=(
            "already_queued: a refresh of this segment was queued and has not started; nothing more was queued."))

        class Meta(SegmentSerializer.Meta):
            ref_name = "SegmentRefresh"
            fields = (*SegmentSerializer.Meta.fields, "refresh")

    @extend_schema(summary="Recompute a segment's members now (queued once)", request=None,
                   responses={202: OutputSerializer, 404: OpenApiResponse(description="No such segment.")})
    def post(self, request, segment_id: int):
        segment = get_object_or_404(Segment, pk=segment_id)
        segment.refresh = "queued" if segment_refresh_queue(segment=segment) else "already_queued"
        return Response(self.OutputSerializer(segment, context={"exact": _may_see_exact(request)}).data,
                        status=status.HTTP_202_ACCEPTED)


class MemberSerializer(serializers.Serializer):
    key = serializers.CharField(source="customer.key")
    score = serializers.FloatField(allow_null=True, help_text="Similarity to the seed or centroid; null for rules.")
    added_at = serializers.DateTimeField(help_text="Member since.")

    class Meta:
        ref_name = "SegmentMember"


class SegmentMembersApi(APIView):
    pagination_class = BoundedPageNumberPagination
    required_scopes = (Scope.PROFILES_READ, Scope.SEGMENTS_EXACT)  # the count is the exact size

    @extend_schema(summary="A segment's members", responses={200: MemberSerializer(many=True),
                                                              404: OpenApiResponse(description="No such segment.")})
    @replica_reads
    def get(self, request, segment_id: int):
        segment = get_object_or_404(Segment, pk=segment_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.segment_members(segment=segment), request, view=self)
        return paginator.get_paginated_response(MemberSerializer(page, many=True).data)


class SegmentExportApi(APIView):
    required_scopes = (Scope.PROFILES_READ, Scope.SEGMENTS_EXACT)

    @extend_schema(
        summary="All of a segment's members as CSV (key, score, member since)",
        responses={(200, "text/csv"): OpenApiTypes.STR, 404: OpenApiResponse(description="No such segment.")},
    )
    def get(self, request, segment_id: int):
        segment = get_object_or_404(Segment, pk=segment_id)
        response = StreamingHttpResponse(selectors.segment_members_csv(segment=segment), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="segment-{segment.pk}.csv"'
        return response


class RuleValidateApi(APIView):
    parser_classes = [BoundedJSONParser]
    required_scopes = (Scope.SEGMENTS_WRITE,)

    class InputSerializer(serializers.Serializer):
        rule = serializers.CharField(max_length=2000)

        class Meta:
            ref_name = "RuleInput"

    class OutputSerializer(serializers.Serializer):
        canonical = serializers.CharField(help_text="The rule as the store reads it.")
        matching = serializers.IntegerField(allow_null=True, help_text=(
            "Visible profiles it selects now, counted up to RULE_CHECK_MAX_COUNT; null without segments:exact."))
        capped = serializers.BooleanField(help_text="True: at least `matching` profiles match (the count stopped).")
        fields = serializers.ListField(child=serializers.CharField(), help_text="Every field a rule may name.")

        class Meta:
            ref_name = "RuleCheck"

    @extend_schema(
        summary="Check a rule and count the profiles it selects",
        request=InputSerializer,
        responses={200: OutputSerializer, 400: OpenApiResponse(description="The rule is invalid; `rule` says where and why.")},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        checked = selectors.segment_rule_check(rule=serializer.validated_data["rule"])
        if not checked["valid"]:
            raise exceptions.ValidationError({"rule": [checked["message"]]})
        matching = checked["matching"] if _may_see_exact(request) else None
        return Response({"canonical": checked["canonical"], "matching": matching, "capped": checked["capped"],
                         "fields": sorted(FIELDS)})


class PrivacyBudgetSpent(exceptions.APIException):
    """429: the token's privacy budget does not cover this release now."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "privacy_budget_exhausted"


class SegmentSizesApi(APIView):
    """Segment sizes for reports that leave the system, with differential-privacy noise."""

    required_scopes = (Scope.PROFILES_READ,)

    class QuerySerializer(serializers.Serializer):
        epsilon = serializers.FloatField(required=False, min_value=0.001,
                                         help_text="Privacy budget of this release: at most DP_EPSILON_MAX (default "
                                                   "DP_EPSILON).")

        class Meta:
            ref_name = "SegmentSizesQuery"

        def validate_epsilon(self, value: float) -> float:
            if value > settings.DP_EPSILON_MAX:
                raise serializers.ValidationError(f"At most {settings.DP_EPSILON_MAX:g} per release.")
            return value

    class OutputSerializer(serializers.Serializer):
        epsilon = serializers.FloatField()
        mechanism = serializers.CharField()
        sizes = serializers.DictField(child=serializers.IntegerField(), help_text="Segment id → noisy member count.")
        budget_remaining = serializers.FloatField(
            help_text="Epsilon this token may still spend in the current window (DP_TOKEN_BUDGET over "
                      "DP_BUDGET_WINDOW_DAYS).",
        )

        class Meta:
            ref_name = "SegmentSizes"

    @extend_schema(
        summary="Every segment's size with differential-privacy noise",
        description=(
            "Discrete Laplace noise (OpenDP) with the whole budget `epsilon` split across the segments, since "
            "one customer may be in all of them; clamped at 0. Without `epsilon`: DP_EPSILON; above "
            "DP_EPSILON_MAX: 400. Each release is charged to the token's privacy budget; when it does not fit, "
            "429 `privacy_budget_exhausted`."
        ),
        parameters=[QuerySerializer],
        responses={200: OutputSerializer, 400: OpenApiResponse(description="epsilon out of bounds."),
                   429: OpenApiResponse(description="The token's privacy budget is spent for now.")},
    )
    def get(self, request):
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        epsilon = min(query.validated_data.get("epsilon", settings.DP_EPSILON), settings.DP_EPSILON_MAX)
        try:
            remaining = api_token_privacy_spend(token=request.user.token, epsilon=epsilon)
        except PrivacyBudgetExhausted as error:
            raise PrivacyBudgetSpent(str(error)) from None
        exact = {str(pk): size for pk, size in Segment.objects.order_by("pk").values_list("pk", "size")}
        noisy = dp_counts(exact, epsilon=epsilon) if exact else {}
        return Response({"epsilon": epsilon, "mechanism": "discrete Laplace, basic composition", "sizes": noisy,
                         "budget_remaining": remaining})
