"""Predictions that drive decisions: purchase and churn forecasts with lifetime value (one fit of
the CLV model, then one row per customer), the risk scorecard's result, and category demand."""

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils.translation import gettext_lazy as _

from config.model_fields import PipelineJSONField


class Audience(models.TextChoices):
    HIGH_VALUE = "high_value", _("high value")
    RISING = "rising", _("rising")
    AT_RISK_HIGH_VALUE = "at_risk_high_value", _("at-risk high value")
    LIKELY_TO_CHURN = "likely_to_churn", _("likely to churn")


class RiskBand(models.TextChoices):
    LOW = "low", _("low")
    MEDIUM = "medium", _("medium")
    HIGH = "high", _("high")


class ClvFit(models.Model):
    """One fit of the CLV model on the event store: BG/NBD + Gamma-Gamma parameters, the trees
    (LightGBM's text format, never a pickle), the back-test that judged it and the thresholds the
    audiences use. The newest successful fit scores customers."""

    cutoff = models.DateTimeField(_("data up to"), help_text=_("The store's newest event when the fit ran"))
    horizon_days = models.PositiveIntegerField(_("forecast horizon (days)"))
    customers = models.PositiveIntegerField(_("customers fitted on"), default=0)
    bgnbd_params = models.JSONField(_("BG/NBD parameters"), default=dict)
    spend_params = models.JSONField(_("Gamma-Gamma parameters"), default=dict, blank=True)
    mean_value = models.FloatField(_("mean value of a repeat purchase"), default=0.0)
    count_model = models.TextField(_("trees (LightGBM)"), blank=True, editable=False,
                                   help_text=_("Empty: too little history to train them; BG/NBD alone predicts"))
    calibration = models.JSONField(_("probability calibration"), default=list, blank=True)
    backtest_days = ArrayField(models.IntegerField(), default=list, blank=True, verbose_name=_("back-test cutoffs"))
    training_rows = models.PositiveIntegerField(_("training rows"), default=0)
    evaluation = models.JSONField(_("back-test against BG/NBD"), default=dict, blank=True)
    importance = models.JSONField(_("feature importance (mean |SHAP|)"), default=list, blank=True)
    thresholds = PipelineJSONField(_("audience thresholds"), default=dict, blank=True)
    created_at = models.DateTimeField(_("fitted at"), auto_now_add=True)

    class Meta:
        verbose_name = _("CLV model fit")
        verbose_name_plural = _("CLV model fits")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"CLV fit #{self.pk} ({self.cutoff:%Y-%m-%d})"

    @property
    def uses_trees(self) -> bool:
        return bool(self.count_model)


class CustomerPrediction(models.Model):
    """A customer's forecasts and risk, refreshed with the profile (batch and real time)."""

    customer = models.OneToOneField("ingestion.Customer", on_delete=models.CASCADE, primary_key=True,
                                    related_name="prediction")
    fit = models.ForeignKey(ClvFit, on_delete=models.CASCADE, related_name="predictions")
    expected_purchases = models.FloatField(_("expected purchases in the horizon"))
    probability_active = models.FloatField(_("probability of buying in the horizon"))
    churn_probability = models.FloatField(_("churn probability"), help_text=_("1 − probability of buying in the horizon"))
    expected_value_per_purchase = models.FloatField(_("expected value of a purchase"))
    expected_spend = models.FloatField(_("expected spend in the horizon"))
    lifetime_value = models.FloatField(_("lifetime value (one year)"))
    past_spend = models.FloatField(_("spend in the last year"))
    bgnbd_expected_purchases = models.FloatField(_("BG/NBD expected purchases"))
    bgnbd_probability_alive = models.FloatField(_("BG/NBD probability alive"))
    source = models.CharField(_("predicted by"), max_length=16)
    audiences = ArrayField(models.CharField(max_length=32, choices=Audience.choices), default=list, blank=True,
                           verbose_name=_("CRM audiences"))
    drivers = PipelineJSONField(_("what drove the forecast"), default=list, blank=True)
    risk_score = models.PositiveSmallIntegerField(_("risk score"), default=0)
    risk_band = models.CharField(_("risk band"), max_length=8, choices=RiskBand.choices, default=RiskBand.LOW)
    risk_reasons = PipelineJSONField(_("risk scorecard lines"), default=list, blank=True)
    computed_at = models.DateTimeField(_("computed at"), auto_now=True)

    class Meta:
        verbose_name = _("customer prediction")
        verbose_name_plural = _("customer predictions")
        indexes = [models.Index(fields=["churn_probability"], name="prediction_churn"),
                   models.Index(fields=["expected_spend"], name="prediction_spend")]

    def __str__(self) -> str:
        return str(self.customer_id)


class DemandForecast(models.Model):
    """Expected purchases per category for the next weeks, with the back-test that judged the method."""

    cutoff = models.DateTimeField(_("data up to"))
    weeks = models.PositiveSmallIntegerField(_("weeks ahead"))
    fit = models.ForeignKey(ClvFit, on_delete=models.SET_NULL, null=True, blank=True, related_name="demand_forecasts")
    backtest = models.JSONField(_("back-test"), default=dict, blank=True)
    created_at = models.DateTimeField(_("made at"), auto_now_add=True)

    class Meta:
        verbose_name = _("category demand forecast")
        verbose_name_plural = _("category demand forecasts")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} · {self.weeks} w"


class CategoryDemand(models.Model):
    forecast = models.ForeignKey(DemandForecast, on_delete=models.CASCADE, related_name="rows")
    category = models.CharField(_("category"), max_length=255)
    week_start = models.DateField(_("week starting"))
    expected_purchases = models.FloatField(_("expected purchases"))
    naive_purchases = models.FloatField(_("seasonal-naive purchases"), null=True, blank=True)

    class Meta:
        verbose_name = _("category demand")
        verbose_name_plural = _("category demand")
        constraints = [models.UniqueConstraint(fields=["forecast", "category", "week_start"], name="demand_one_row")]
