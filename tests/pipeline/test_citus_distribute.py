"""`manage.py citus_distribute` (issue 16): on plain PostgreSQL it stops with what to install; the plan
it applies on a Citus coordinator converts every table of pipeline.sharding once, in an order Citus
accepts. The run on a real cluster is recorded in README "Scale-out: Citus"."""

import pytest
from django.core.management import CommandError, call_command

from pipeline.citus import ANCHOR, database_settings, distribution_plan
from pipeline.sharding import CUSTOMER_KEYED, KEY_LOOKUP, REFERENCE


@pytest.mark.django_db
def test_without_the_citus_extension_it_says_what_to_install():
    with pytest.raises(CommandError, match=r"the citus extension is not installed in database .*CREATE EXTENSION citus"):
        call_command("citus_distribute")


def test_the_plan_shards_around_the_customer_table_then_copies_the_reference_tables():
    plan = distribution_plan(customer_keyed=CUSTOMER_KEYED, key_lookup=KEY_LOOKUP, reference=REFERENCE)
    assert [step.table for step in plan].count(ANCHOR) == 1 and plan[0].table == ANCHOR
    assert plan[0].colocate_with == "none"
    assert sorted(step.table for step in plan) == sorted([*CUSTOMER_KEYED, *KEY_LOOKUP, *REFERENCE])
    kinds = [step.kind for step in plan]
    assert kinds == sorted(kinds)  # every distributed table before the first reference table
    for step in plan[1:]:
        if step.table in CUSTOMER_KEYED:
            assert (step.column, step.colocate_with) == (CUSTOMER_KEYED[step.table], ANCHOR)
        elif step.table in KEY_LOOKUP:
            assert (step.column, step.colocate_with) == (KEY_LOOKUP[step.table], "none")
        else:
            assert (step.kind, step.column) == ("reference", None)


def test_the_search_settings_reach_the_shards(settings):
    settings.SIMILARITY_EF_SEARCH = 123
    wanted = database_settings()
    assert wanted["citus.propagate_set_commands"] == "local"  # the SET LOCAL of profiles_nearest reaches every shard
    assert wanted["hnsw.ef_search"] == "123" and wanted["hnsw.iterative_scan"] == "relaxed_order"
