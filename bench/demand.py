"""Demand by category: our forecast (ClvModel purchase days × shrunk category preferences + newcomers)
against the seasonal-naive baseline, on two data sets, by MAPE over categories.

- synthetic: the product's generator (20,000 customers, 2M events over 365 days, built in-process
  without a database); categories are the items' top-level categories; the last 8 weeks are forecast.
  The generator signs customers up only in the first 80% of its period (day 292 of 365), so these 8
  weeks follow a stop in acquisition that the history before the cutoff barely shows.
- synthetic_steady: the same shop generated over 456 days and cut at day 365, so customers keep
  arriving through the forecast weeks as in a running shop.
- movielens: MovieLens-100k; a rating is a purchase line in each of the film's genres (amount and
  quantity split over them); the last 6 weeks are forecast. With ~7 months of history there is no year
  before the cutoff, so the naive baseline repeats the last 6 weeks.

Prints a per-category table per data set, then one JSON line: per data set the MAPE of the W-week
totals per category (model and naive), the weekly-level MAPEs and counts; the top-level `model_mape`
and `naive_mape` are the means over all three runs (the acquisition stop, where naive wins, included).

    python bench/demand.py [--datasets PATH] [--customers N] [--events N]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from crm.demand import demand_backtest  # noqa: E402
from ingestion.generator import ShopConfig, generate_events, generate_items  # noqa: E402

DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
SYNTHETIC_WEEKS = 8
MOVIELENS_WEEKS = 6


def synthetic_purchases(config: ShopConfig) -> pd.DataFrame:
    """One row per purchase event of the generated shop: customer, day, category, amount, quantity."""
    items = generate_items(config)
    category_of = pd.Series(items["category_path"].str.split("/").str[0].to_numpy(), index=items["sku"].to_numpy())
    start = pd.Timestamp(config.start)
    parts = []
    for chunk in generate_events(config):
        bought = chunk[chunk["event_type"] == "purchase"]
        parts.append(pd.DataFrame({
            "customer": bought["customer_id"].to_numpy(dtype=object),
            "day": (bought["timestamp"] - start).dt.days.to_numpy(),
            "category": category_of.reindex(bought["item_id"].to_numpy()).to_numpy(),
            "amount": bought["value"].to_numpy(float),
            "quantity": bought["quantity"].to_numpy(float),
        }))
    return pd.concat(parts, ignore_index=True)


def movielens_purchases(folder: Path) -> pd.DataFrame:
    """Ratings as purchase lines, one row per (rating, genre), amount and quantity split over the genres."""
    ratings = pd.read_csv(folder / "ml-100k.inter", sep="\t")
    ratings.columns = ["user", "item", "rating", "timestamp"]
    items = pd.read_csv(folder / "ml-100k.item", sep="\t")
    items.columns = ["item", "title", "year", "genres"]
    genres = items.set_index("item")["genres"].fillna("unknown").str.split(" ").explode().rename("category")
    day = (ratings["timestamp"] // 86_400).astype(int)
    lines = ratings.assign(day=day - day.min()).join(genres, on="item")
    share = 1.0 / lines.groupby(level=0)["category"].transform("size")
    return pd.DataFrame({
        "customer": lines["user"].to_numpy(), "day": lines["day"].to_numpy(), "category": lines["category"].to_numpy(),
        "amount": share.to_numpy(), "quantity": share.to_numpy(),
    }).reset_index(drop=True)


def run(name: str, purchases: pd.DataFrame, weeks: int) -> dict:
    cutoff = int(purchases["day"].max()) + 1 - 7 * weeks
    started = time.perf_counter()
    result = demand_backtest(purchases, cutoff=cutoff, weeks=weeks)
    table = result.table.sort_values("actual", ascending=False)
    print(f"\n{name}: {len(purchases):,} lines, {purchases['customer'].nunique():,} customers, cutoff day {cutoff}, "
          f"{weeks} weeks; preference prior {result.prior_strength:g} lines, basket prior {result.prior_days:g} days, "
          f"season {result.season_weeks} weeks ({time.perf_counter() - started:.1f} s)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"))
    totals = {key: float(frame.to_numpy().sum()) for key, frame in
              (("forecast", result.forecast), ("naive", result.naive), ("actual", result.actual))}
    print("total " + ", ".join(f"{k} {v:,.0f}" for k, v in totals.items()))
    print("weekly totals\n" + pd.DataFrame({"forecast": result.forecast.sum(), "naive": result.naive.sum(),
                                           "actual": result.actual.sum()}).round(0).T.to_string())
    summary = result.summary()
    summary["total_ape_model"] = round(abs(totals["forecast"] - totals["actual"]) / totals["actual"], 4)
    summary["total_ape_naive"] = round(abs(totals["naive"] - totals["actual"]) / totals["actual"], 4)
    print(json.dumps(summary))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    config = ShopConfig(customers=args.customers, events=args.events, seed=args.seed, days=365)
    synthetic = run("synthetic", synthetic_purchases(config), SYNTHETIC_WEEKS)
    # 0.8 × 456 ≈ 365: sign-ups continue to the last day kept; events scaled to keep ~2M in 365 days
    longer = ShopConfig(customers=args.customers, events=args.events * 456 // 365, seed=args.seed, days=456)
    steady = synthetic_purchases(longer)
    synthetic_steady = run("synthetic_steady", steady[steady["day"] < 365], SYNTHETIC_WEEKS)
    movielens = run("movielens", movielens_purchases(args.datasets / "ml-100k"), MOVIELENS_WEEKS)
    print(f"\nrun time {time.perf_counter() - started:.1f} s")
    print(json.dumps({
        "model_mape": round(float(np.mean([r["model_mape"] for r in (synthetic, synthetic_steady, movielens)])), 4),
        "naive_mape": round(float(np.mean([r["naive_mape"] for r in (synthetic, synthetic_steady, movielens)])), 4),
        "synthetic": synthetic, "movielens": movielens, "synthetic_steady": synthetic_steady,
    }))


if __name__ == "__main__":
    main()
