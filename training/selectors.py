"""Reads of the training app: a run's per-epoch series and a version's evaluation table."""

from training.models import ModelVersion


def training_run_series(*, history: list[dict]) -> dict:
    """A run's history as series for charts and the per-epoch table: epochs (counted from 1), the
    training loss, the validation loss when the trainer records one, each validation metric (None
    where an epoch has none), and one row per epoch for the table."""
    epochs = [int(h.get("epoch", i)) + 1 for i, h in enumerate(history)]
    metric_names = sorted({name for h in history for name in (h.get("valid") or {})})
    has_valid_loss = any("valid_loss" in h for h in history)
    rows = [
        {"epoch": epoch, "loss": h.get("loss"), "valid_loss": h.get("valid_loss"),
         "metrics": [(h.get("valid") or {}).get(name) for name in metric_names], "seconds": h.get("seconds")}
        for epoch, h in zip(epochs, history, strict=True)
    ]
    return {
        "epochs": epochs,
        "loss": [r["loss"] for r in rows],
        "valid_loss": [r["valid_loss"] for r in rows] if has_valid_loss else [],
        "metric_names": metric_names,
        "metrics": {name: [r["metrics"][i] for r in rows] for i, name in enumerate(metric_names)},
        "rows": rows,
    }


def model_version_evaluation(*, version: ModelVersion) -> dict:
    """The version's metrics as rows (metric name, validation value, test value, and each stored
    baseline's value when there are any) plus the epoch whose weights were kept."""
    valid = version.metrics.get("valid") or {}
    test = version.metrics.get("test") or {}
    baselines = version.metrics.get("baselines") or {}
    rows = [
        {"metric": name, "valid": valid.get(name), "test": test.get(name),
         "baselines": {b: (values or {}).get(name) for b, values in sorted(baselines.items())}}
        for name in sorted(set(valid) | set(test))
    ]
    return {"rows": rows, "baseline_names": sorted(baselines), "best_epoch": version.metrics.get("best_epoch")}
