"""Celery tasks of the CLV model (queue `profiles`): thin and idempotent — a fit replaces nothing
it cannot recompute, a re-score upserts."""

from celery import shared_task

from config.celery import IDEMPOTENT_TASK
from pipeline import flows


@shared_task(**IDEMPOTENT_TASK)
def clv_fit_task() -> dict:
    """Nightly, after the batch build, and on demand from the admin: fit, back-test, score all, then
    forecast category demand and refresh the audience segments (pipeline.flows.clv_refit)."""
    result = flows.clv_refit()
    if "skipped" in result:
        return result
    fit, forecast = result["fit"], result["demand_forecast"]
    return {"fit": fit.pk, "customers": fit.customers, "demand_forecast": forecast.pk if forecast else None,
            "audiences": result["audiences"]}


def clv_fit_queue() -> None:
    """The admin's refit button: queue a fit (raises config.celery.BrokerUnavailable when no broker
    answers, with the command that starts one)."""
    from config.celery import broker_check

    broker_check()
    clv_fit_task.delay()
