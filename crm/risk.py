"""The risk scorecard: points for payment and return behaviour, nothing else.

A transparent scorecard instead of a learned model: every point can be read off the customer's
own orders, a business user can check it, and it cannot learn a proxy for a protected attribute
because it only ever sees the counts below (age, gender, region and the like never reach it).

| line              | measured as                                         | points                        |
|-------------------|-----------------------------------------------------|-------------------------------|
| refund rate       | refunds / purchases                                 | ≥10% 10, ≥25% 20, ≥50% 35     |
| refunded value    | refunded value / purchased value                    | ≥25% 10, ≥50% 20              |
| cancellation rate | cancellations / (purchases + cancellations)         | ≥25% 10, ≥50% 20              |
| chargebacks       | refunds whose context says reason "chargeback"      | 30, +10 each more, at most 50 |
| new account       | first purchase < 14 days ago, worth > 3 × median    | 10                            |

The score is the sum, capped at 100; band low < 20 ≤ medium < 50 ≤ high. A customer without
purchases scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass

BANDS = ((50, "high"), (20, "medium"), (0, "low"))
NEW_ACCOUNT_DAYS = 14
LARGE_FIRST_ORDER_MULTIPLE = 3.0


@dataclass(frozen=True)
class OrderBehaviour:
    purchases: int = 0
    purchased_value: float = 0.0
    refunds: int = 0
    refunded_value: float = 0.0
    cancellations: int = 0
    chargebacks: int = 0
    days_since_first_purchase: float | None = None
    first_order_value: float | None = None


def _tier(value: float, steps: tuple[tuple[float, int], ...]) -> int:
    return next((points for threshold, points in steps if value >= threshold), 0)


def risk_score(behaviour: OrderBehaviour, *, median_order_value: float) -> tuple[int, str, list[dict]]:
    """(score 0–100, band, the scorecard lines that gave points, each with its measured value)."""
    lines: list[dict] = []

    def add(rule: str, value, points: int):
        if points:
            lines.append({"rule": rule, "value": value, "points": points})

    if behaviour.purchases:
        refund_rate = behaviour.refunds / behaviour.purchases
        add("refund_rate", round(refund_rate, 3), _tier(refund_rate, ((0.5, 35), (0.25, 20), (0.10, 10))))
        if behaviour.purchased_value > 0:
            share = behaviour.refunded_value / behaviour.purchased_value
            add("refunded_value_share", round(share, 3), _tier(share, ((0.5, 20), (0.25, 10))))
    attempts = behaviour.purchases + behaviour.cancellations
    if attempts:
        cancel_rate = behaviour.cancellations / attempts
        add("cancellation_rate", round(cancel_rate, 3), _tier(cancel_rate, ((0.5, 20), (0.25, 10))))
    if behaviour.chargebacks:
        add("chargebacks", behaviour.chargebacks, min(50, 30 + 10 * (behaviour.chargebacks - 1)))
    if (behaviour.days_since_first_purchase is not None and behaviour.first_order_value is not None
            and behaviour.days_since_first_purchase < NEW_ACCOUNT_DAYS and median_order_value > 0
            and behaviour.first_order_value > LARGE_FIRST_ORDER_MULTIPLE * median_order_value):
        add("new_account_large_order", round(behaviour.first_order_value, 2), 10)

    score = min(100, sum(line["points"] for line in lines))
    band = next(name for floor, name in BANDS if score >= floor)
    return score, band, lines
