"""Celery tasks of the CLV model (queue `profiles`): thin and idempotent — a fit replaces nothing
it cannot recompute, a re-score upserts."""

import logging

from celery import shared_task

from config.celery import IDEMPOTENT_TASK
from crm import services

logger = logging.getLogger(__name__)


@shared_task(**IDEMPOTENT_TASK)
def clv_fit_task() -> dict:
    """Nightly, after the batch build, and on demand from the admin: fit, back-test, score all,
    then forecast category demand with the new fit."""
    try:
        fit = services.clv_fit()
    except services.NotEnoughHistory as exc:
        logger.info("CLV fit skipped: %s", exc)
        return {"skipped": str(exc)}
    forecast = services.demand_forecast_make(fit=fit)
    return {"fit": fit.pk, "customers": fit.customers, "demand_forecast": forecast.pk if forecast else None}
