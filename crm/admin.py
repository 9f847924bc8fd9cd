"""Admin of customer value and risk: CLV fits with their back-test against BG/NBD and what drives
them, customer predictions (filterable by audience and risk), category demand as a table and a
chart, and a button that refits on demand."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _

from config.charts import bar_chart, line_chart
from crm.explain import FEATURE_LABELS, audience_reason, driver_text, risk_line_text
from crm.models import Audience, ClvFit, CustomerPrediction, DemandForecast
from crm.selectors import demand_forecast_latest, demand_table


def _table(head, rows) -> str:
    return format_html(
        "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
        format_html_join("", "<th>{}</th>", ((h,) for h in head)),
        format_html_join("", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),) for row in rows)),
    )


def _number(value, digits=4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def evaluation_rows(evaluation: dict) -> list[tuple]:
    """(metric, ours, BG/NBD) rows of a back-test, for the fit page and the dashboard."""
    if not evaluation or "model" not in evaluation:
        return []
    ours, reference = evaluation["model"], evaluation["bgnbd"]
    return [
        (_("mean absolute error per customer"), _number(ours["mae"]), _number(reference["mae"])),
        (_("root mean squared error"), _number(ours["rmse"]), _number(reference["rmse"])),
        (_("AUC of buying at all"), _number(ours["auc"]), _number(reference["auc"])),
        (_("total purchases (actual %(actual)s)") % {"actual": f"{evaluation['actual_total']:.0f}"},
         _number(ours["total"], 1), _number(reference["total"], 1)),
    ]


@admin.register(ClvFit)
class ClvFitAdmin(admin.ModelAdmin):
    list_display = ("__str__", "customers", "uses_trees", "model_mae", "bgnbd_mae", "model_auc", "bgnbd_auc", "created_at")
    readonly_fields = ("cutoff", "horizon_days", "customers", "uses_trees", "backtest_table", "importance_table",
                       "parameters", "audience_rules", "training_rows", "backtest_days", "created_at")
    fields = readonly_fields
    change_list_template = "admin/crm/clvfit/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [path("refit/", self.admin_site.admin_view(self.refit_view), name="crm_clvfit_refit"), *super().get_urls()]

    def refit_view(self, request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("crm.add_clvfit"):
            raise PermissionDenied
        from config.celery import BrokerUnavailable
        from crm.tasks import clv_fit_queue

        try:
            clv_fit_queue()
        except BrokerUnavailable as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, _("The CLV model is being refitted; predictions and demand follow."))
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
            target = reverse("admin:crm_clvfit_changelist")  # never redirect off the site
        return HttpResponseRedirect(target)

    @admin.display(description=_("uses trees"), boolean=True)
    def uses_trees(self, obj):
        return obj.uses_trees

    def _metric(self, obj, model, name):
        return _number((obj.evaluation.get(model) or {}).get(name))

    @admin.display(description=_("MAE (ours)"))
    def model_mae(self, obj):
        return self._metric(obj, "model", "mae")

    @admin.display(description=_("MAE (BG/NBD)"))
    def bgnbd_mae(self, obj):
        return self._metric(obj, "bgnbd", "mae")

    @admin.display(description=_("AUC (ours)"))
    def model_auc(self, obj):
        return self._metric(obj, "model", "auc")

    @admin.display(description=_("AUC (BG/NBD)"))
    def bgnbd_auc(self, obj):
        return self._metric(obj, "bgnbd", "auc")

    @admin.display(description=_("back-test: the horizon before the data's end, forecast from what was known then"))
    def backtest_table(self, obj):
        rows = evaluation_rows(obj.evaluation)
        if not rows:
            return obj.evaluation.get("skipped", "—")
        return _table([_("metric"), _("our model"), _("BG/NBD")], rows)

    @admin.display(description=_("what drives the forecasts (mean |SHAP|, log scale)"))
    def importance_table(self, obj):
        if not obj.importance:
            return _("BG/NBD alone: the shop had too little history to learn corrections.")
        top = obj.importance[:10]
        peak = max(row["mean_abs_shap"] for row in top) or 1.0
        return _table([_("feature"), _("importance")], [
            (FEATURE_LABELS.get(row["feature"], row["feature"]),
             format_html('<span class="portrait-bar" style="width:{}px"></span> {}',
                         int(160 * row["mean_abs_shap"] / peak), f"{row['mean_abs_shap']:.4f}"))
            for row in top])

    @admin.display(description=_("BG/NBD and Gamma-Gamma parameters"))
    def parameters(self, obj):
        values = {**obj.bgnbd_params, **{f"gamma-gamma {k}": v for k, v in obj.spend_params.items()}}
        return _table([_("parameter"), _("value")], [(k, f"{v:.4f}") for k, v in values.items()])

    @admin.display(description=_("CRM audiences"))
    def audience_rules(self, obj):
        return _table([_("audience"), _("rule")],
                      [(label, audience_reason(value, obj.thresholds)) for value, label in Audience.choices])


@admin.register(CustomerPrediction)
class CustomerPredictionAdmin(admin.ModelAdmin):
    list_display = ("customer_link", "churn_probability_display", "expected_purchases_display", "expected_spend_display",
                    "lifetime_value_display", "audience_list", "risk_score", "risk_band", "source", "computed_at")
    list_display_links = ("churn_probability_display",)  # the customer column links to the profile page
    list_select_related = ("customer",)
    search_fields = ("=customer__key",)
    show_full_result_count = False
    ordering = ("-expected_spend",)
    readonly_fields = ("customer", "fit", "churn_probability", "probability_active", "expected_purchases",
                       "expected_spend", "lifetime_value", "expected_value_per_purchase", "past_spend",
                       "bgnbd_expected_purchases", "bgnbd_probability_alive", "source", "audience_list",
                       "driver_list", "risk_score", "risk_band", "risk_lines", "computed_at")
    fields = readonly_fields

    class AudienceFilter(admin.SimpleListFilter):
        title = _("CRM audience")
        parameter_name = "audience"

        def lookups(self, request, model_admin):
            return Audience.choices

        def queryset(self, request, queryset):
            if self.value() in Audience.values:
                return queryset.filter(audiences__contains=[self.value()])
            return queryset

    list_filter = (AudienceFilter, "risk_band", "source")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("customer"))
    def customer_link(self, obj):
        return format_html('<a href="{}">{}</a>', reverse("admin:profiles_profile_change", args=[obj.customer_id]),
                           f"{obj.customer.key[:14]}…")

    @admin.display(description=_("churn probability"), ordering="churn_probability")
    def churn_probability_display(self, obj):
        return f"{obj.churn_probability:.0%}"

    @admin.display(description=_("expected purchases"), ordering="expected_purchases")
    def expected_purchases_display(self, obj):
        return f"{obj.expected_purchases:.2f}"

    @admin.display(description=_("expected spend"), ordering="expected_spend")
    def expected_spend_display(self, obj):
        return f"{obj.expected_spend:,.2f}"

    @admin.display(description=_("lifetime value (one year)"), ordering="lifetime_value")
    def lifetime_value_display(self, obj):
        return f"{obj.lifetime_value:,.2f}"

    @admin.display(description=_("CRM audiences"))
    def audience_list(self, obj):
        labels = dict(Audience.choices)
        return ", ".join(str(labels.get(a, a)) for a in obj.audiences) or "—"

    @admin.display(description=_("what drove the forecast"))
    def driver_list(self, obj):
        return format_html_join("", "<div>{}</div>", ((driver_text(d),) for d in obj.drivers)) or "—"

    @admin.display(description=_("risk scorecard lines"))
    def risk_lines(self, obj):
        return format_html_join("", "<div>{}</div>", ((risk_line_text(line),) for line in obj.risk_reasons)) or "—"


@admin.register(DemandForecast)
class DemandForecastAdmin(admin.ModelAdmin):
    list_display = ("__str__", "weeks", "cutoff", "backtest_model_mape", "backtest_naive_mape", "created_at")
    change_form_template = "admin/crm/demandforecast/change_form.html"
    change_list_template = "admin/crm/demandforecast/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [path("latest/", self.admin_site.admin_view(self.latest_view), name="crm_demandforecast_latest"),
                *super().get_urls()]

    @admin.display(description=_("back-test MAPE (ours)"))
    def backtest_model_mape(self, obj):
        value = obj.backtest.get("model_mape")
        return "—" if value is None else f"{value:.1%}"

    @admin.display(description=_("back-test MAPE (seasonal naive)"))
    def backtest_naive_mape(self, obj):
        value = obj.backtest.get("naive_mape")
        return "—" if value is None else f"{value:.1%}"

    def latest_view(self, request):
        latest = demand_forecast_latest()
        if latest is None:
            return HttpResponseRedirect(reverse("admin:crm_demandforecast_changelist"))
        return HttpResponseRedirect(reverse("admin:crm_demandforecast_change", args=[latest.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        forecast = self.get_object(request, object_id)
        if forecast is None:
            return super().change_view(request, object_id, form_url, extra_context)
        weeks, table = demand_table(forecast=forecast)
        labels = [week.isoformat() for week in weeks]
        top = table[:8]
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "original": forecast,
            "title": _("Category demand for the %(weeks)s weeks from %(start)s") % {
                "weeks": forecast.weeks, "start": labels[0] if labels else "—"},
            "weeks": weeks, "table": table,
            "chart_demand": line_chart(labels=labels, datasets=[
                {"label": row["category"], "data": [round(v, 1) for v in row["series"]]} for row in top],
                x_title=str(_("week starting")), y_title=str(_("expected purchases"))),
            "chart_totals": bar_chart(labels=[row["category"] for row in table], datasets=[
                {"label": str(_("our forecast")), "data": [round(row["total"], 1) for row in table]},
                {"label": str(_("seasonal naive")), "data": [round(row["naive_total"], 1) for row in table]}],
                horizontal=True, x_title=str(_("expected purchases in the period"))),
            "backtest": forecast.backtest,
        }
        return TemplateResponse(request, self.change_form_template, context)
