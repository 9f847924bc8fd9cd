"""config.serializer_fields: a serializer whose fields are built once per class and thread validates
each instance on its own (values, errors, the field's parent), as a serializer with copied fields does."""

import threading

from rest_framework import serializers

from config.serializer_fields import FieldsBuiltOnce


class QuerySerializer(FieldsBuiltOnce):
    k = serializers.IntegerField(min_value=1, max_value=100, default=10)
    space = serializers.ChoiceField(choices=["traits", "fused"], default="fused")

    def validate_space(self, value):
        self.seen_space = value
        return value


def test_instances_validate_on_their_own():
    bad = QuerySerializer(data={"k": "0"})
    good = QuerySerializer(data={"k": "5", "space": "traits"})

    assert not bad.is_valid()
    assert good.is_valid(), good.errors
    assert good.validated_data == {"k": 5, "space": "traits"}
    assert set(bad.errors) == {"k"}  # the other instance's validation did not touch its errors
    assert QuerySerializer(data={}).is_valid()
    assert (good.seen_space, bad.seen_space) == ("traits", "fused")  # each validate_ method ran on its own instance


def test_fields_are_shared_within_a_thread_and_bound_to_the_instance_using_them():
    first, second = QuerySerializer(data={}), QuerySerializer(data={})

    assert first.fields["k"] is second.fields["k"]
    assert second.fields["k"].parent is second
    assert first.fields["k"].parent is first  # taken again by the first: bound to it again
    assert first.fields["k"].field_name == "k" and first.fields["k"].source == "k"


def test_threads_do_not_share_fields():
    here = QuerySerializer(data={}).fields["k"]
    there = []
    thread = threading.Thread(target=lambda: there.append(QuerySerializer(data={}).fields["k"]))
    thread.start()
    thread.join()

    assert there and there[0] is not here


def test_representation_uses_the_shared_fields():
    class Output(FieldsBuiltOnce):
        key = serializers.CharField(source="customer.key")
        tier = serializers.CharField()

    class Row:
        def __init__(self, key, tier):
            self.customer = type("C", (), {"key": key})()
            self.tier = tier

    assert Output(Row("a", "high")).data == {"key": "a", "tier": "high"}
    assert Output([Row("b", "low"), Row("c", "none")], many=True).data == [
        {"key": "b", "tier": "low"}, {"key": "c", "tier": "none"}]
