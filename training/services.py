"""Writes of the training app: the adapter between the event store and `training/ml` (arrays in,
tensors out), training runs, the activation gate and writing embeddings to profiles."""

from __future__ import annotations

import hashlib
import io
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from training.models import ModelVersion, RunStatus, TrainingRun

_EVENTS_COPY = """
COPY (
    SELECT e.customer_id, coalesce(e.item_id, 0), e.event_type, extract(epoch FROM e.occurred_at), e.value
    FROM ingestion_event e JOIN ingestion_customer c ON c.id = e.customer_id AND c.merged_into_id IS NULL
) TO STDOUT (FORMAT csv)
"""


def training_dataset_read():
    """Every live customer's events as sequences, with the item vocabulary (index i ↔ item_ids[i-1])
    and a description of the snapshot. One COPY, no ORM objects."""
    from training.ml import data

    buffer = io.BytesIO()
    read_at = timezone.now()
    with connection.cursor() as cursor, cursor.copy(_EVENTS_COPY) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    frame = pd.read_csv(buffer, header=None, names=["customer", "item", "type", "time", "value"])
    item_ids = np.unique(frame["item"][frame["item"] > 0].to_numpy())
    index = np.searchsorted(item_ids, frame["item"].to_numpy()) + 1
    index[frame["item"].to_numpy() == 0] = 0
    seqs = data.sequences_build(
        customers=frame["customer"].to_numpy("int64"), items=index.astype("int64"),
        event_types=frame["type"].to_numpy("int64"), times=frame["time"].to_numpy("float64"),
        values=frame["value"].to_numpy("float64"),
    )
    described = {"customers": int(len(seqs.customers)), "items": int(len(item_ids)), "events": int(len(frame)),
                 "read_at": read_at.isoformat()}
    return seqs, item_ids.tolist(), described


def training_run_create(*, arch: str = "transformer", config: dict | None = None, user=None) -> TrainingRun:
    from training.ml.config import EncoderConfig

    EncoderConfig(arch=arch)  # refuses an unknown architecture now, not in the worker
    return TrainingRun.objects.create(arch=arch, config=config or {}, created_by=user)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Train a claimed run to the end; None if another worker holds it or it is done. Resumes from
    the run's last checkpoint when a previous attempt died."""
    from training.ml.config import EncoderConfig, TrainConfig
    from training.ml.data import leave_one_out
    from training.ml.trainer import BEST, train

    claimed = TrainingRun.objects.filter(pk=run_id, status__in=[RunStatus.PENDING, RunStatus.RUNNING]).update(
        status=RunStatus.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return None
    run = TrainingRun.objects.get(pk=run_id)
    try:
        seqs, item_ids, described = training_dataset_read()
        model_args = {"dim": 64, "max_len": 50, "layers": 2, "heads": 2, **run.config.get("model", {})}
        model_config = EncoderConfig(arch=run.arch, n_items=len(item_ids), **model_args)
        train_config = TrainConfig(**run.config.get("train", {}))
        directory = Path(settings.MODELS_DIR) / f"run-{run.pk}"
        TrainingRun.objects.filter(pk=run.pk).update(
            dataset=described, config={"model": model_config.as_dict(), "train": train_config.as_dict()}
        )

        def on_epoch(record):
            TrainingRun.objects.filter(pk=run.pk).update(history=[*TrainingRun.objects.get(pk=run.pk).history, record])

        result = train(seqs=seqs, split=leave_one_out(seqs), model_config=model_config, train_config=train_config,
                       checkpoint_dir=directory, on_epoch=on_epoch)
        artifact = directory / BEST
        version = ModelVersion.objects.create(
            name=f"{run.arch}-{run.pk}", run=run, artifact_path=str(artifact), artifact_sha256=_sha256(artifact),
            item_ids=item_ids, metrics={"valid": result.best_valid, "test": result.test, "best_epoch": result.best_epoch},
        )
        if model_version_gate(version=version):
            model_version_activate(version=version, seqs=seqs)
        TrainingRun.objects.filter(pk=run.pk).update(  # last: "succeeded" means gated and, if passed, live
            status=RunStatus.SUCCEEDED, finished_at=timezone.now(), device=result.device, metrics=result.test,
            history=result.history,
        )
    except Exception as exc:
        TrainingRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED, finished_at=timezone.now(),
            error="".join(traceback.format_exception_only(exc)).strip()[:10_000],
        )
        raise
    return TrainingRun.objects.get(pk=run.pk)


GATE_METRIC = "ndcg@10"


def model_version_gate(*, version: ModelVersion) -> bool:
    """A new version may become active only if it is not worse than the active one on validation
    NDCG@10. Records the decision on the version."""
    active = ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).first()
    mine = version.metrics.get("valid", {}).get(GATE_METRIC, 0.0)
    theirs = active.metrics.get("valid", {}).get(GATE_METRIC, 0.0) if active else None
    passed = theirs is None or mine >= theirs
    version.gate = {"metric": f"valid {GATE_METRIC}", "candidate": mine, "active": theirs,
                    "active_version": active.pk if active else None, "passed": passed}
    version.save(update_fields=["gate"])
    return passed


def model_version_activate(*, version: ModelVersion, seqs=None, batch_customers: int = 2048) -> int:
    """Encode every profiled customer with this version, write the embeddings (with the version),
    then mark it active. Similarity queries compare only vectors of one version, so search never
    mixes old and new embeddings during the switch. Returns the number of profiles encoded."""
    import torch

    from training.ml.data import batch_of
    from training.ml.trainer import model_load

    if _sha256(Path(version.artifact_path)) != version.artifact_sha256:
        raise RuntimeError(f"artifact of model version {version.pk} does not match its checksum")
    if seqs is None:
        seqs, item_ids, _ = training_dataset_read()
        if item_ids != version.item_ids:
            raise RuntimeError("the item vocabulary changed since training; retrain instead")
    model = model_load(Path(version.artifact_path))
    with connection.cursor() as cursor:
        cursor.execute("SELECT customer_id FROM profiles_profile")
        profiled = {row[0] for row in cursor.fetchall()}
    rows = np.array([i for i, c in enumerate(seqs.customers) if int(c) in profiled], dtype="int64")
    written = 0
    for start in range(0, len(rows), batch_customers):
        part = rows[start:start + batch_customers]
        with torch.no_grad():
            vectors = model.user_embedding(batch_of(seqs, part, model.config.max_len)).numpy()
        written += _embeddings_write(seqs.customers[part], vectors, version.pk)
    with transaction.atomic():
        ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())
    return written


def _embeddings_write(customer_ids: np.ndarray, vectors: np.ndarray, version_id: int) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS embedding_stage (customer_id bigint, embedding text) ON COMMIT DELETE ROWS"
        )
        with cursor.copy("COPY embedding_stage (customer_id, embedding) FROM STDIN") as copy:
            for customer_id, vector in zip(customer_ids, vectors, strict=True):
                copy.write_row([int(customer_id), "[" + ",".join(f"{v:.6g}" for v in vector) + "]"])
        cursor.execute(
            "UPDATE profiles_profile p SET embedding = s.embedding::vector, model_version_id = %s "
            "FROM embedding_stage s WHERE p.customer_id = s.customer_id",
            [version_id],
        )
        return cursor.rowcount
