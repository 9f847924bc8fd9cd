"""Validation of one customer, item or social-edge row, shared by the API and file imports."""

import json

from rest_framework import serializers


class JsonObjectField(serializers.DictField):
    """A JSON object that PostgreSQL's jsonb can store: no NUL character in any key or value."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if "\\u0000" in json.dumps(value):
            raise serializers.ValidationError("must not contain NUL characters")
        return value


class CustomerRow(serializers.Serializer):
    external_id = serializers.CharField(max_length=256)
    email = serializers.EmailField(required=False, allow_blank=True)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    phone = serializers.RegexField(r"^\+?[0-9 ()\-]{4,32}$", required=False, allow_blank=True)
    age = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=130)
    age_band = serializers.CharField(required=False, allow_blank=True, max_length=16)
    gender = serializers.ChoiceField(["female", "male", "other", ""], required=False)
    region = serializers.CharField(required=False, allow_blank=True, max_length=64)
    signup_date = serializers.DateField(required=False, allow_null=True)
    is_loyalty_member = serializers.BooleanField(required=False)
    consent_profiling = serializers.BooleanField(required=False)
    consent_marketing = serializers.BooleanField(required=False)
    attributes = JsonObjectField(required=False)


class ItemRow(serializers.Serializer):
    sku = serializers.CharField(max_length=128)
    title = serializers.CharField(required=False, allow_blank=True, max_length=500)
    category_path = serializers.CharField(required=False, allow_blank=True, max_length=255)
    brand = serializers.CharField(required=False, allow_blank=True, max_length=128)
    price = serializers.DecimalField(required=False, allow_null=True, max_digits=12, decimal_places=2, min_value=0)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False, allow_blank=True)
    attributes = JsonObjectField(required=False)


class SocialEdgeRow(serializers.Serializer):
    source_id = serializers.CharField(max_length=256)
    target_id = serializers.CharField(max_length=256)
    relation = serializers.ChoiceField(["follow", "referral", "share"])
    occurred_at = serializers.DateTimeField(required=False, allow_null=True)
    weight = serializers.FloatField(required=False, min_value=0)

    def validate(self, attrs):
        if attrs["source_id"] == attrs["target_id"]:
            raise serializers.ValidationError({"target_id": ["must differ from source_id"]})
        return attrs
