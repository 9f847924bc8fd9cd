"""config.compiled_query: a QuerySet compiled once and run with other values answers as the same
QuerySet built with those values, and a build whose placeholder does not reach the SQL as a
parameter is refused instead of run."""

import pytest

from config.compiled_query import CompiledQuery, Slot
from ingestion.models import Customer
from profiles.models import FeatureSet, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def profiles():
    feature_set = FeatureSet.objects.create(version=1, feature_names=["x"], pipeline=b"", pipeline_sha256="0" * 64)
    customers = Customer.objects.bulk_create([Customer(key=f"k{i}", source="test") for i in range(3)])
    return Profile.objects.bulk_create([
        Profile(customer=c, feature_set=feature_set, traits={"n": i}, value_tier="high" if i else "low",
                snapshot_at="2026-01-01T00:00:00Z")
        for i, c in enumerate(customers)
    ])


def test_rows_and_instances_answer_as_the_queryset_with_those_values(profiles):
    def build(key):
        return Profile.objects.select_related("customer", "feature_set").filter(customer__key=key).order_by("pk")

    values = CompiledQuery(lambda key: build(key).values_list("customer_id", "value_tier", "traits"), key=Slot("\x00key"))
    models = CompiledQuery(build, key=Slot("\x00key"))

    for key in ("k0", "k2", "nobody"):
        expected = list(build(key))
        found = models.instances(key=key)
        assert [(p.pk, p.traits, p.customer.key, p.feature_set.version) for p in found] == [
            (p.pk, p.traits, p.customer.key, p.feature_set.version) for p in expected]
        assert [(cid, tier) for cid, tier, _ in values.rows(key=key)] == [(p.pk, p.value_tier) for p in expected]


def test_a_build_that_does_not_pass_its_placeholder_as_a_parameter_is_refused(profiles):
    # the key is lower-cased before it reaches the SQL: the placeholder is not among the parameters
    inlined = CompiledQuery(lambda key: Profile.objects.filter(customer__key=key.lower()).values_list("pk"),
                            key=Slot("\x00KEY"))

    with pytest.raises(ValueError, match="every slot"):
        inlined.rows(key="k0")
