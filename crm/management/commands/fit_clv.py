"""Fit the CLV model on the event store, score every customer, forecast category demand and refresh the
audience segments (pipeline.flows.clv_refit)."""

import time

from django.core.management.base import BaseCommand, CommandError

from crm.models import ClvFit
from pipeline import flows


class Command(BaseCommand):
    help = "Fit the CLV model (BG/NBD-anchored trees), score every customer and forecast category demand."

    def add_arguments(self, parser):
        parser.add_argument("--if-missing", action="store_true", help="Do nothing when a fit exists.")
        parser.add_argument("--horizon-days", type=int, default=None,
                            help="Forecast horizon in days (default CLV_HORIZON_DAYS); at least 1.")

    def handle(self, *args, if_missing: bool, horizon_days: int | None, **options):
        if if_missing and ClvFit.objects.exists():
            self.stdout.write("A CLV fit exists; nothing to do.")
            return
        if horizon_days is not None and horizon_days < 1:
            raise CommandError(f"--horizon-days must be at least 1, got {horizon_days}")
        started = time.perf_counter()
        result = flows.clv_refit(horizon_days=horizon_days)
        if "skipped" in result:
            raise CommandError(result["skipped"])
        fit, forecast = result["fit"], result["demand_forecast"]
        evaluation = fit.evaluation
        self.stdout.write(f"CLV fit #{fit.pk}: {fit.customers} customers, trees: {fit.uses_trees}, "
                          f"{time.perf_counter() - started:.1f} s")
        if "model" in evaluation:
            self.stdout.write(f"back-test MAE ours {evaluation['model']['mae']} vs BG/NBD {evaluation['bgnbd']['mae']}; "
                              f"AUC ours {evaluation['model']['auc']} vs BG/NBD {evaluation['bgnbd']['auc']}")
        if forecast is not None:
            self.stdout.write(f"category demand forecast #{forecast.pk} for {forecast.weeks} weeks")
