"""A profile refresh that finished is not counted failed when Redis (the result backend) is away
(seen in bench/chaos.py: finished refreshes dead-lettered with ConnectionError on the Redis restart,
raised while storing a result nobody reads)."""

import redis
from celery.app.trace import build_tracer

from config.celery import app
from profiles.tasks import profiles_refresh_task


def test_a_finished_refresh_succeeds_though_its_result_cannot_be_stored(monkeypatch):
    def backend_away(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to the result backend. Connection refused.")

    monkeypatch.setattr("pipeline.flows.customers_refresh", lambda *, customer_ids: len(customer_ids))
    monkeypatch.setattr(profiles_refresh_task.backend, "store_result", backend_away)
    tracer = build_tracer(profiles_refresh_task.name, profiles_refresh_task, app=app, eager=False, propagate=False)

    outcome = tracer("refresh-1", [[1, 2]], {}, {"id": "refresh-1", "delivery_info": {}})

    assert outcome.info is None, outcome.info  # no internal error: the task counts as a success
    assert outcome.retval == 2
