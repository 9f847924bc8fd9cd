"""The CLV baseline is fitted right (BG/NBD reproduces Fader, Hardie & Lee's published parameters on
CDNOW_sample) and our model beats it on the classic CDNOW split, as bench/clv_cdnow.py reports."""

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from crm.clv import BgNbd, ClvModel, backtest_cutoffs, purchase_days, rfm_summary

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from clv_cdnow import CALIBRATION_END, HOLDOUT_END, cdnow_purchases  # noqa: E402


def test_bgnbd_reproduces_the_published_parameters_on_the_cdnow_sample(datasets):
    days = purchase_days(cdnow_purchases(datasets / "cdnow" / "CDNOW_sample.txt"))

    summary = rfm_summary(days, CALIBRATION_END)
    fitted = BgNbd.fit(summary).params

    # Fader, Hardie & Lee (2005), 2,357 customers, 39 calibration weeks
    assert len(summary) == 2357
    assert fitted["r"] == pytest.approx(0.243, abs=0.002)
    assert fitted["alpha"] == pytest.approx(4.414, abs=0.01)
    assert fitted["a"] == pytest.approx(0.793, abs=0.002)
    assert fitted["b"] == pytest.approx(2.426, abs=0.01)


def test_our_model_beats_bgnbd_on_the_cdnow_holdout(datasets):
    days = purchase_days(cdnow_purchases(datasets / "cdnow" / "CDNOW_master.txt"))
    calibration = days[days["day"] < CALIBRATION_END]
    model = ClvModel.fit(calibration, cutoff=CALIBRATION_END,
                         backtest_cutoffs=backtest_cutoffs(first_day=0, cutoff=CALIBRATION_END))

    predicted = model.predict(calibration, cutoff=CALIBRATION_END, horizon_weeks=39)

    holdout = days[(days["day"] >= CALIBRATION_END) & (days["day"] < HOLDOUT_END)]
    actual = holdout.groupby("customer").size().reindex(predicted.index).fillna(0).to_numpy()
    ours = predicted["expected_purchases"].to_numpy()
    reference = predicted["bgnbd_expected_purchases"].to_numpy()
    assert np.abs(ours - actual).mean() < np.abs(reference - actual).mean()
    reference_auc = max(roc_auc_score(actual > 0, predicted["bgnbd_probability_active"]), roc_auc_score(actual > 0, reference))
    assert roc_auc_score(actual > 0, predicted["probability_active"]) > reference_auc
    assert ours.sum() == pytest.approx(reference.sum(), rel=0.05)
