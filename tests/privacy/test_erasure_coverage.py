"""Erasure's stores come from the models: every relation to ingestion.Customer in any installed
app is erased by its app's service or exempted with a reason, or no erasure runs; and no process
keeps a raw external id in memory after it is used."""

import inspect

import pytest
from django.db import models

from ingestion import pseudonyms
from ingestion.models import Customer
from ingestion.services import customers_upsert
from privacy import erasure, services
from privacy.models import RequestState
from segments import services as segment_services


class LoyaltyCard(models.Model):
    """A customer-keyed table somebody adds tomorrow (never migrated: only its metadata is read)."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)

    class Meta:
        app_label = "erasure_coverage_probe"


def test_every_relation_to_customer_is_erased_by_its_app_or_exempted_with_a_reason():
    relations = erasure.customer_relations()
    covered = erasure.customer_relations_covered()

    assert "segments.SegmentMembership.customer" in relations and "ingestion.Event.customer" in relations
    assert erasure.customer_relations_uncovered() == [], (
        "a model relates to Customer but no *_erase service declares it (CUSTOMER_RELATIONS_ERASED in its "
        "app's services) and privacy.erasure.CUSTOMER_RELATIONS_EXEMPT gives no reason")
    assert all(why.strip() for why in erasure.CUSTOMER_RELATIONS_EXEMPT.values())
    for module in erasure._APP_ERASE_SERVICES:
        for relation, service in module.CUSTOMER_RELATIONS_ERASED.items():
            assert relation in relations, f"{relation} is declared but is no relation to Customer"
            assert callable(getattr(module, service, None)), f"{module.__name__}.{service} does not exist"
    assert set(covered) >= set(relations)


def test_a_new_customer_keyed_table_is_reported_as_not_erased():
    assert erasure.customer_relations_uncovered([LoyaltyCard]) == ["erasure_coverage_probe.LoyaltyCard.customer"]


@pytest.mark.django_db
def test_an_erasure_refuses_to_run_while_a_relation_is_uncovered(monkeypatch, django_user_model):
    from django.contrib.auth.models import Group

    officer = django_user_model.objects.create_user("cora", password="pw-for-tests-only", is_staff=True)
    officer.groups.add(Group.objects.get(name="Compliance"))
    officer = django_user_model.objects.get(pk=officer.pk)
    customers_upsert(rows=[{"external_id": "subject-1", "email": "s1@example.com"}], source="default")
    request = services.privacy_request_file(kind="erasure", source="default", external_id="subject-1", actor=officer)
    services.privacy_request_verify(request=request, actor=officer)
    monkeypatch.setattr(segment_services, "CUSTOMER_RELATIONS_ERASED", {})

    with pytest.raises(erasure.ErasureCoverageError, match="segments.SegmentMembership.customer"):
        services.privacy_request_execute(request=request, actor=officer)

    request.refresh_from_db()
    assert request.state == RequestState.PARTIALLY_FAILED
    assert Customer.objects.filter(source="default").count() == 1  # nothing was deleted


def test_no_process_wide_cache_keeps_an_external_id():
    pseudonyms.customer_key(source="default", external_id="subject-kept-in-memory?")

    memoised = [name for name, function in vars(pseudonyms).items()
                if hasattr(function, "cache_info") and inspect.signature(function).parameters
                and function.cache_info().currsize]
    assert memoised == [], f"{memoised} keep the arguments (raw external ids) of every call"
