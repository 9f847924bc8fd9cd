"""REST reads of profiles: one profile with its explanation (scope `profiles:read`; the neighbours in it
also need `similarity:read`), similar customers and lookalike expansion (`similarity:read`),
recommendations (`profiles:read`)."""

import math
import re

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from access.models import Scope
from config.db_router import replica_reads
from config.serializer_fields import FieldsBuiltOnce
from ingestion.apis import BoundedJSONParser
from ingestion.selectors import customer_key_resolve
from crm.explain import prediction_explained
from crm.selectors import customer_prediction_get
from profiles import recommendations, selectors
from profiles.models import LifecycleStage, ValueTier
from segments.selectors import segments_of_customer

API_SOURCE = "default"
EXPLANATION_NEIGHBOURS = 5
# pgvector stores float4; anything near its limit is not a meaningful direction anyway
MAX_VECTOR_COMPONENT = 1e6
_PSEUDONYM = re.compile(r"[0-9a-f]{64}")


def _key_from_path(request, key: str) -> str:
    """The pseudonymous key a path names, by itself or (`by=external_id`) by external id; 400 for a
    malformed key or `by`."""
    by = request.query_params.get("by", "key")
    if by == "external_id":
        if not key or len(key) > 256 or "\x00" in key:
            raise exceptions.ValidationError({"key": ["An external id is 1 to 256 characters without NUL."]})
        return customer_key_resolve(source=API_SOURCE, external_id=key)
    if by != "key":
        raise exceptions.ValidationError({"by": ["Must be 'key' or 'external_id'."]})
    if not _PSEUDONYM.fullmatch(key):
        raise exceptions.ValidationError({"key": ["A key is 64 lowercase hex characters."]})
    return key


def _profile_from_path(request, key: str, *, embedding: bool = False):
    """The visible profile a path names; 400 for a malformed key, 404 for one that names nothing the
    caller may see."""
    profile = selectors.profile_get(key=_key_from_path(request, key), embedding=embedding)
    if profile is None:
        raise exceptions.NotFound("No profile for this customer.")
    return profile


_KEY_PARAMETERS = [
    OpenApiParameter("key", OpenApiTypes.STR, OpenApiParameter.PATH,
                     description="The customer's pseudonymous key (64 hex), or its external id with `by=external_id`."),
    OpenApiParameter("by", OpenApiTypes.STR, enum=["key", "external_id"], required=False),
]


class NeighbourSerializer(serializers.Serializer):
    key = serializers.CharField(source="customer.key")
    similarity = serializers.FloatField()
    value_tier = serializers.CharField()
    lifecycle_stage = serializers.CharField()

    class Meta:
        ref_name = "Neighbour"


def _neighbours(pairs) -> list[dict]:
    """NeighbourSerializer's output, built directly: a serializer per row cost more than the search."""
    return [{"key": profile.customer.key, "similarity": round(float(similarity), 6), "value_tier": profile.value_tier,
             "lifecycle_stage": profile.lifecycle_stage} for profile, similarity in pairs]


class FilterSerializer(FieldsBuiltOnce):
    """Which profiles a similarity search may return (all optional, combined with AND)."""

    where = serializers.CharField(
        required=False, max_length=2000,
        help_text='A rule over traits in the segment rule language, e.g. `monetary > 100 and top_category = "Books"`.',
    )
    lifecycle_stage = serializers.CharField(
        required=False, max_length=100, help_text="Comma-separated stages, e.g. `active,new`.",
    )
    value_tier_min = serializers.ChoiceField(choices=ValueTier.values, required=False,
                                             help_text="Only this value tier or higher (none < low < medium < high).")
    segment = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1,
                                       help_text="Only members of this segment.")

    class Meta:
        ref_name = "NeighbourFilterInput"

    def validate_lifecycle_stage(self, value: str) -> tuple[str, ...]:
        stages = tuple(s.strip() for s in value.split(",") if s.strip())
        unknown = sorted(set(stages) - set(LifecycleStage.values))
        if not stages or unknown:
            raise serializers.ValidationError(f"Stages are {', '.join(LifecycleStage.values)}; unknown: {', '.join(unknown)}.")
        return stages

    def validate_where(self, value: str):
        from segments.rules import RuleError, rule_parse, rule_to_q

        try:
            return rule_to_q(rule_parse(value))
        except RuleError as error:
            raise serializers.ValidationError(str(error)) from None

    def validate_segment(self, value: int) -> int:
        from segments.models import Segment

        size = Segment.objects.filter(pk=value).values_list("size", flat=True).first()
        if size is None:
            raise serializers.ValidationError("No such segment.")
        self.segment_size = size  # its materialised size bounds the rows the filter keeps
        return value

    def neighbour_filter(self) -> selectors.NeighbourFilter:
        from segments.selectors import segment_members_q

        data = self.validated_data
        where = data.get("where")
        if data.get("segment") is not None:
            members = segment_members_q(segment_id=data["segment"])
            where = members if where is None else where & members
        return selectors.NeighbourFilter(
            where=where, lifecycle_stages=data.get("lifecycle_stage", ()), value_tier_min=data.get("value_tier_min"),
            max_rows=getattr(self, "segment_size", None) if data.get("segment") is not None else None,
        )


def _bounded_k(maximum: int, default: int):
    return serializers.IntegerField(
        required=False, default=default, min_value=1, max_value=maximum, help_text=f"1 to {maximum}.",
    )


class SearchBreadthMixin(FieldsBuiltOnce):
    """How hard the HNSW walk searches: `ef_search` itself, or the recall@10 the caller wants (the
    ef_search measured to reach it, selectors.RECALL_EF_SEARCH); neither: SIMILARITY_EF_SEARCH."""

    ef_search = serializers.IntegerField(
        required=False, default=settings.SIMILARITY_EF_SEARCH, min_value=selectors.EF_SEARCH_BOUNDS[0],
        max_value=selectors.EF_SEARCH_BOUNDS[1],
        help_text="HNSW search breadth: higher is more exact and slower. Give this or recall, not both.",
    )
    recall = serializers.ChoiceField(
        choices=list(selectors.RECALL_EF_SEARCH), required=False,
        error_messages={"invalid_choice": f"Recall is one of {', '.join(selectors.RECALL_EF_SEARCH)}, not {{input}}."},
        help_text=("The recall@10 wanted: searched with the ef_search that reached it in the similarity benchmark ("
                   + ", ".join(f"{r}: {ef}" for r, ef in selectors.RECALL_EF_SEARCH.items())
                   + "). Give this or ef_search, not both."),
    )

    def validate(self, data):
        data = super().validate(data)
        if "recall" in data:
            if "ef_search" in self.initial_data:
                raise serializers.ValidationError({"recall": ["Give recall or ef_search, not both."]})
            data["ef_search"] = selectors.RECALL_EF_SEARCH[data["recall"]]
        return data


class SimilarQuerySerializer(SearchBreadthMixin, FilterSerializer):
    k = _bounded_k(settings.API_MAX_K, 10)
    space = serializers.ChoiceField(choices=list(selectors.SPACES), default="fused",
                                    help_text="traits, embedding (learned) or fused (both, weighted).")

    class Meta:
        ref_name = "SimilarQuery"


def _query_params(serializer_class, request):
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer


# A similar request's validated query string and filter, by the query string, per process: validating its
# 8 fields took 36 µs a request (1 µs kept; issue 20), and apps send a handful of distinct query strings.
# Not a query naming a `segment`, whose check reads the segment (deleted or resized since); an invalid
# query raises before anything is kept, so it is refused every time.
_SIMILAR_QUERIES: dict[tuple, tuple[dict, selectors.NeighbourFilter]] = {}
_SIMILAR_QUERIES_KEPT = 256


def _similar_query(request) -> tuple[dict, selectors.NeighbourFilter]:
    params = request.query_params
    text = tuple(sorted((name, tuple(values)) for name, values in params.lists()))
    found = _SIMILAR_QUERIES.get(text)
    if found is None:
        query = _query_params(SimilarQuerySerializer, request)
        found = (query.validated_data, query.neighbour_filter())
        if "segment" not in params:
            if len(_SIMILAR_QUERIES) >= _SIMILAR_QUERIES_KEPT:
                _SIMILAR_QUERIES.clear()
            _SIMILAR_QUERIES[text] = found
    return found


class ProfileDetailApi(APIView):
    required_scopes = (Scope.PROFILES_READ,)

    class OutputSerializer(FieldsBuiltOnce):
        class Meta:
            ref_name = "Profile"

        key = serializers.CharField(source="customer.key", help_text="The customer's pseudonymous key.")
        value_tier = serializers.CharField()
        lifecycle_stage = serializers.CharField()
        traits = serializers.JSONField()
        scores = serializers.JSONField(help_text="RFM scores 1–5 and population percentiles.")
        segments = serializers.JSONField(help_text="Segments the customer belongs to: id, name, kind.")
        explanation = serializers.JSONField(
            help_text=("Top categories, the traits furthest from the population, and (only for a token with "
                       "similarity:read) the nearest neighbours.")
        )
        predictions = serializers.JSONField(
            allow_null=True,
            help_text=("Churn and purchase forecast for the horizon, expected spend and one-year lifetime value, the "
                       "BG/NBD baseline, the features that drove the forecast, CRM audiences with their rule, and the "
                       "risk scorecard's lines. Null for a customer without purchases or before the first CLV fit."),
        )
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
        parameters=_KEY_PARAMETERS,
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="Malformed key or `by`."),
            403: OpenApiResponse(description="Token lacks profiles:read."),
            404: OpenApiResponse(description="No profile for this customer."),
        },
    )
    @replica_reads
    def get(self, request, key: str):
        profile = _profile_from_path(request, key)
        profile.scores = selectors.profile_scores(profile)
        profile.segments = segments_of_customer(customer_id=profile.pk)
        if Scope.SIMILARITY_READ in request.user.scopes:
            neighbours = [] if profile.fused_text is None else selectors.profiles_similar_to(
                customer_id=profile.pk, feature_set_id=profile.feature_set_id, model_version_id=profile.model_version_id,
                vector=profile.fused_text, k=EXPLANATION_NEIGHBOURS, space="fused", ef_search=40,
            )
            profile.explanation = {**profile.explanation, "neighbours": _neighbours(neighbours)}
        prediction = customer_prediction_get(customer_id=profile.customer_id)
        profile.predictions = prediction_explained(prediction) if prediction else None
        return Response(profile_answer(profile))


_DATETIME = serializers.DateTimeField()


def profile_answer(profile) -> dict:
    """ProfileDetailApi.OutputSerializer's representation, built directly (the serializer stays the
    answer's schema, and a test holds the two equal): its 16 fields cost ~90 µs a request (issue 20)."""
    def moment(value):
        return None if value is None else _DATETIME.to_representation(value)

    return {
        "key": profile.customer.key, "value_tier": profile.value_tier, "lifecycle_stage": profile.lifecycle_stage,
        "traits": profile.traits, "scores": profile.scores, "segments": profile.segments,
        "explanation": profile.explanation, "predictions": profile.predictions,
        "feature_set_version": profile.feature_set.version, "model_version": profile.model_version_id,
        "events_included": profile.events_included, "last_event_at": moment(profile.last_event_at),
        "watermark": moment(profile.watermark), "computed_at": moment(profile.computed_at),
    }


class ProfileSimilarApi(APIView):
    required_scopes = (Scope.SIMILARITY_READ,)

    @extend_schema(
        summary="Customers most similar to this one",
        description=(
            "Cosine nearest neighbours through an HNSW graph, the customer excluded, only among profiles of the same "
            "feature-set and model version. Without filters the search runs on the in-memory graph and its "
            "candidates are checked against the store; filters are applied during pgvector's index walk (iterative "
            "scan), so a filtered search still returns k customers when that many match."
        ),
        parameters=[*_KEY_PARAMETERS, SimilarQuerySerializer],
        responses={
            200: NeighbourSerializer(many=True),
            400: OpenApiResponse(description="A parameter out of bounds or malformed; the body names it."),
            403: OpenApiResponse(description="Token lacks similarity:read."),
            404: OpenApiResponse(description="No profile for this customer."),
        },
    )
    @replica_reads
    def get(self, request, key: str):
        data, where = _similar_query(request)
        # only what the search needs of the profile: its id, coordinates and vector in this space
        anchor = selectors.search_anchor_get(key=_key_from_path(request, key), space=data["space"])
        if anchor is None:
            raise exceptions.NotFound("No profile for this customer.")
        if anchor.vector is None:
            return Response([])
        pairs = selectors.profiles_similar_to(
            customer_id=anchor.customer_id, feature_set_id=anchor.feature_set_id, model_version_id=anchor.model_version_id,
            vector=anchor.vector, k=data["k"], space=data["space"], ef_search=data["ef_search"],
            where=where,
        )
        return Response(_neighbours(pairs))


class LookalikeApi(APIView):
    parser_classes = [BoundedJSONParser]
    required_scopes = (Scope.SIMILARITY_READ,)

    class InputSerializer(SearchBreadthMixin, FilterSerializer):
        vector = serializers.ListField(
            child=serializers.FloatField(), required=False, min_length=1, max_length=selectors.FUSED_DIMENSIONS,
            help_text="A query vector in the chosen space (16 traits, 64 embedding, 80 fused); or give seed_keys.",
        )
        seed_keys = serializers.ListField(
            child=serializers.RegexField(r"^[0-9a-f]{64}$", max_length=64), required=False, min_length=1,
            max_length=settings.API_MAX_SEEDS, help_text="Pseudonymous keys of the seed audience.",
        )
        n = serializers.IntegerField(required=False, default=100, min_value=1, max_value=settings.API_MAX_LOOKALIKE)
        space = serializers.ChoiceField(choices=list(selectors.SPACES), default="fused")
        method = serializers.ChoiceField(choices=selectors.LOOKALIKE_METHODS, default="centroid",
                                         help_text="centroid: one search around the seeds' mean; multi_query: one per seed.")

        class Meta:
            ref_name = "LookalikeInput"

        def validate(self, data):
            data = super().validate(data)
            if ("vector" in data) == ("seed_keys" in data):
                raise serializers.ValidationError({"vector": ["Give exactly one of vector and seed_keys."]})
            seeds = len(set(data.get("seed_keys", ())))
            if data["method"] == "multi_query" and seeds * data["n"] > settings.API_MAX_SEARCH_ROWS:
                raise serializers.ValidationError({"n": [
                    f"multi_query runs one search per seed: seeds × n must be at most {settings.API_MAX_SEARCH_ROWS} "
                    f"(API_MAX_SEARCH_ROWS), not {seeds} × {data['n']}. Use fewer seeds, a smaller n, or centroid."]})
            vector = data.get("vector")
            if vector is not None:
                expected = selectors.SPACE_DIMENSIONS[data["space"]]
                if len(vector) != expected:
                    raise serializers.ValidationError(
                        {"vector": [f"The {data['space']} space has {expected} dimensions, not {len(vector)}."]}
                    )
                if not all(math.isfinite(v) and abs(v) <= MAX_VECTOR_COMPONENT for v in vector) or not any(vector):
                    raise serializers.ValidationError(
                        {"vector": [f"Numbers within ±{MAX_VECTOR_COMPONENT:g}, not all zero."]}
                    )
            return data

    class OutputSerializer(serializers.Serializer):
        method = serializers.CharField(help_text="vector, centroid or multi_query")
        space = serializers.CharField()
        seeds_used = serializers.IntegerField(help_text="Seeds with a comparable vector (0 for a vector query).")
        seeds_unknown = serializers.IntegerField(help_text="Seed keys with no visible profile.")
        results = NeighbourSerializer(many=True)

        class Meta:
            ref_name = "Lookalike"

    @extend_schema(
        summary="Nearest customers to a vector, or lookalike expansion of a seed audience",
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="Malformed input, or no seed has a vector in this space."),
            403: OpenApiResponse(description="Token lacks similarity:read."),
        },
    )
    @replica_reads
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data, where = serializer.validated_data, serializer.neighbour_filter()
        if "vector" in data:
            pairs = selectors.profiles_near_vector(
                vector=data["vector"], space=data["space"], k=data["n"], ef_search=data["ef_search"], where=where,
            )
            body = {"method": "vector", "space": data["space"], "seeds_used": 0, "seeds_unknown": 0, "results": pairs}
        else:
            keys = list(dict.fromkeys(data["seed_keys"]))
            seeds = selectors.profiles_by_keys(keys=keys)
            result = selectors.lookalike_expand(
                seeds=seeds, n=data["n"], space=data["space"], method=data["method"], ef_search=data["ef_search"],
                where=where,
            )
            if result.seeds_used == 0:
                raise exceptions.ValidationError(
                    {"seed_keys": [f"None of the seeds has a profile with a vector in the {data['space']} space."]}
                )
            body = {"method": result.method, "space": result.space, "seeds_used": result.seeds_used,
                    "seeds_unknown": len(keys) - len(seeds), "results": result.results}
        body["results"] = _neighbours(body["results"])
        return Response(body)


class ProfileRecommendationsApi(APIView):
    required_scopes = (Scope.PROFILES_READ,)

    class QuerySerializer(FieldsBuiltOnce):
        k = _bounded_k(settings.API_MAX_K, 10)
        max_per_category = serializers.IntegerField(
            required=False, min_value=1, max_value=settings.API_MAX_K,
            help_text="At most this many items of one top-level category (variety); unlimited when absent.",
        )

        class Meta:
            ref_name = "RecommendationsQuery"

    class ItemSerializer(FieldsBuiltOnce):
        sku = serializers.CharField(source="item.sku")
        title = serializers.CharField(source="item.title")
        category = serializers.CharField(source="item.category_path")
        score = serializers.FloatField()
        reason = serializers.CharField(help_text="embedding, popular_in_category or popular")

        class Meta:
            ref_name = "RecommendedItem"

    class OutputSerializer(FieldsBuiltOnce):
        method = serializers.CharField(help_text="embedding (user·item scores) or popular (cold start)")
        model_version = serializers.IntegerField(source="model_version_id", allow_null=True)
        items = serializers.SerializerMethodField()

        class Meta:
            ref_name = "Recommendations"

        def get_items(self, result) -> list[dict]:
            return ProfileRecommendationsApi.ItemSerializer(result.items, many=True).data

    @extend_schema(
        summary="Items to recommend to this customer",
        description=(
            "Ranked by the customer's learned embedding against item embeddings of the same model version; items "
            "already bought or rated are left out. Customers without an embedding get the most bought items of "
            "their preferred categories, then of the shop."
        ),
        parameters=[*_KEY_PARAMETERS, QuerySerializer],
        responses={
            200: OutputSerializer,
            400: OpenApiResponse(description="A parameter out of bounds or malformed; the body names it."),
            403: OpenApiResponse(description="Token lacks profiles:read."),
            404: OpenApiResponse(description="No profile for this customer."),
        },
    )
    @replica_reads
    def get(self, request, key: str):
        query = _query_params(self.QuerySerializer, request)
        profile = _profile_from_path(request, key, embedding=True)
        result = recommendations.recommendations_for(
            profile=profile, k=query.validated_data["k"], max_per_category=query.validated_data.get("max_per_category"),
        )
        return Response(self.OutputSerializer(result).data)
