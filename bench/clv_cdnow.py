"""Our purchase/churn/CLV model against BG/NBD + Gamma-Gamma on CDNOW, the classic split.

Calibration: 1997-01-01 … 1997-09-30 (39 weeks); holdout: 1997-10-01 … 1998-06-30 (39 weeks). For
each customer of the cohort both models predict the number of purchase days in the holdout
("repeat purchases": every holdout purchase is a repeat one, the cohort's first purchases are all
in 1997 Q1), whether there is any, and the holdout spend. Both are fitted on the calibration period
only, in the same run. Prints a table, then one JSON line.

    python bench/clv_cdnow.py [--data PATH] [--sample]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from crm.clv import ClvModel, backtest_cutoffs, forecast_scores, purchase_days  # noqa: E402

DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "cdnow"
START = pd.Timestamp("1997-01-01")
CALIBRATION_END = 273  # 1997-10-01, the first day not in calibration
HOLDOUT_END = 546  # 1998-07-01
THRESHOLD = 0.5  # "will buy" when a calibrated probability says more likely than not


def cdnow_purchases(path: Path) -> pd.DataFrame:
    """CDNOW_master (id date cds dollars) or CDNOW_sample (id1 id date cds dollars), whitespace-separated."""
    raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, comment=None)
    raw = raw[raw.iloc[:, -3].str.isdigit()]  # the master file has a header line
    if raw.shape[1] == 5:
        raw = raw.iloc[:, 1:]
    raw.columns = ["customer", "date", "quantity", "amount"]
    return pd.DataFrame({
        "customer": raw["customer"].to_numpy(),
        "day": (pd.to_datetime(raw["date"], format="%Y%m%d") - START).dt.days.to_numpy(),
        "quantity": raw["quantity"].astype(float).to_numpy(),
        "amount": raw["amount"].astype(float).to_numpy(),
    })


def decision_metrics(actual: np.ndarray, probability: np.ndarray) -> dict:
    decided = probability >= THRESHOLD
    return {
        "accuracy": round(accuracy_score(actual, decided), 4),
        "precision": round(precision_score(actual, decided, zero_division=0), 4),
        "recall": round(recall_score(actual, decided, zero_division=0), 4),
        "f1": round(f1_score(actual, decided, zero_division=0), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--sample", action="store_true", help="CDNOW_sample.txt (2,357 customers) instead of the master file")
    args = parser.parse_args()
    path = args.data or DATASETS / ("CDNOW_sample.txt" if args.sample else "CDNOW_master.txt")

    started = time.perf_counter()
    days = purchase_days(cdnow_purchases(path))
    calibration = days[days["day"] < CALIBRATION_END]
    horizon_weeks = (HOLDOUT_END - CALIBRATION_END) / 7
    cutoffs = backtest_cutoffs(first_day=int(calibration["day"].min()), cutoff=CALIBRATION_END)
    model = ClvModel.fit(calibration, cutoff=CALIBRATION_END, backtest_cutoffs=cutoffs)
    predicted = model.predict(calibration, cutoff=CALIBRATION_END, horizon_weeks=horizon_weeks)
    fitted_s = time.perf_counter() - started

    holdout = days[(days["day"] >= CALIBRATION_END) & (days["day"] < HOLDOUT_END)]
    actual = holdout.groupby("customer").size().reindex(predicted.index).fillna(0.0).to_numpy()
    actual_spend = holdout.groupby("customer")["amount"].sum().reindex(predicted.index).fillna(0.0).to_numpy()
    bought = actual > 0

    def scores(count, probability, spend):
        return {
            **forecast_scores(count, probability, actual),
            "spend_spearman": round(float(spearmanr(spend, actual_spend).statistic), 4),
            **decision_metrics(bought, probability),
        }

    ours = scores(predicted["expected_purchases"].to_numpy(), predicted["probability_active"].to_numpy(),
                  predicted["expected_spend"].to_numpy())
    reference = scores(predicted["bgnbd_expected_purchases"].to_numpy(), predicted["bgnbd_probability_active"].to_numpy(),
                       predicted["bgnbd_expected_spend"].to_numpy())
    # BG/NBD's other natural ranking, its expected count: report the better of its two AUCs
    reference_auc_by_count = round(float(roc_auc_score(bought, predicted["bgnbd_expected_purchases"])), 4)

    print(f"CDNOW {path.name}: {len(predicted)} customers, backtest cutoffs (day) {cutoffs}, "
          f"{model.training_rows} training rows, fitted in {fitted_s:.1f} s")
    print(f"BG/NBD r={model.bgnbd.params['r']:.3f} alpha={model.bgnbd.params['alpha']:.3f} "
          f"a={model.bgnbd.params['a']:.3f} b={model.bgnbd.params['b']:.3f}")
    print(f"{'metric':16s}{'ours':>10s}{'BG/NBD':>10s}")
    for key in ours:
        print(f"{key:16s}{ours[key]:>10}{reference[key]:>10}")
    print(f"{'actual total':16s}{actual.sum():>10.0f}   (BG/NBD AUC ranking by expected count: {reference_auc_by_count})")
    print(json.dumps({
        "model_mae": ours["mae"], "bgnbd_mae": reference["mae"],
        "model_rmse": ours["rmse"], "bgnbd_rmse": reference["rmse"],
        "model_auc": ours["auc"], "bgnbd_auc": max(reference["auc"], reference_auc_by_count),
        "model_total": ours["total"], "bgnbd_total": reference["total"], "actual_total": float(actual.sum()),
        "model_spend_spearman": ours["spend_spearman"], "bgnbd_spend_spearman": reference["spend_spearman"],
        "threshold": THRESHOLD,
        "model_decision": {k: ours[k] for k in ("accuracy", "precision", "recall", "f1")},
        "bgnbd_decision": {k: reference[k] for k in ("accuracy", "precision", "recall", "f1")},
        "customers": len(predicted), "data": path.name,
    }))


if __name__ == "__main__":
    main()
