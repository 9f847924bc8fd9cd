"""Derived labels, by documented rules (README "Profiles").

Value tier, from net spend (purchases minus refunds) against the population of buyers when the
feature set was fitted:
- none: no purchase; high: at or above the 80th percentile of buyers' net spend;
- medium: at or above the 40th percentile; low: the rest.

Lifecycle stage, from days since the customer's last event at the reference time:
- dormant: no event at all (a record only);
- new: first event within the last NEW_DAYS and not lapsed;
- active: an event within ACTIVE_DAYS; at_risk: within LAPSED_DAYS; lapsed: longer ago.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HIGH_PERCENTILE = 80
MEDIUM_PERCENTILE = 40
NEW_DAYS = 30
ACTIVE_DAYS = 30
LAPSED_DAYS = 90


def value_thresholds(net_monetary: pd.Series, frequency: pd.Series) -> dict:
    buyers = net_monetary[frequency > 0]
    if buyers.empty:
        return {"high": None, "medium": None}
    return {
        "high": float(np.percentile(buyers, HIGH_PERCENTILE)),
        "medium": float(np.percentile(buyers, MEDIUM_PERCENTILE)),
    }


def value_tiers(features: pd.DataFrame, thresholds: dict) -> pd.Series:
    net = features["net_monetary"].fillna(0.0)
    tiers = pd.Series("low", index=features.index, dtype=object)
    if thresholds.get("medium") is not None:
        tiers[net >= thresholds["medium"]] = "medium"
        tiers[net >= thresholds["high"]] = "high"
    tiers[features["frequency"].fillna(0) <= 0] = "none"
    return tiers


def lifecycle_stages(features: pd.DataFrame) -> pd.Series:
    idle = features["days_since_last_event"]
    tenure = features["tenure_days"]
    stages = pd.Series("lapsed", index=features.index, dtype=object)
    stages[idle <= LAPSED_DAYS] = "at_risk"
    stages[idle <= ACTIVE_DAYS] = "active"
    stages[(tenure <= NEW_DAYS) & (idle <= ACTIVE_DAYS)] = "new"
    stages[idle.isna()] = "dormant"
    return stages
