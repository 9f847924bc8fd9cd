"""Writes of the training app: the adapter between the event store and `training/ml` (arrays in,
tensors out), training runs, the activation gate and writing embeddings to profiles."""

from __future__ import annotations

import functools
import hashlib
import io
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ingestion.models import Customer, Item
from training.models import EMBEDDING_DIMENSIONS, ItemEmbedding, ModelVersion, RunStatus, TrainingRun

_EVENTS_COPY = """
COPY (
    SELECT e.customer_id, coalesce(e.item_id, 0), e.event_type, extract(epoch FROM e.occurred_at), e.value
    FROM ingestion_event e
    -- live customers who consent to profiling (an opt-out leaves every later training run)
    JOIN ingestion_customer c ON c.id = e.customer_id AND c.merged_into_id IS NULL AND c.consent_profiling
    WHERE {where}
    -- a total order: events at the same instant (MovieLens rates many films in one second) come in
    -- the order they arrived (file line, batch position), the same in every read, so a run, its
    -- resume and a re-encode see the same sequences
    ORDER BY e.customer_id, e.occurred_at, e.arrival
) TO STDOUT (FORMAT csv)
"""


def _events_frame(*, customer_ids: list[int] | None = None, before=None) -> pd.DataFrame:
    """Events of live customers (all, or these) as a flat frame, read by one COPY."""
    where, params = ["true"], []
    if customer_ids is not None:
        where.append("e.customer_id = ANY(%s)")
        params.append(list(customer_ids))
    if before is not None:
        where.append("e.occurred_at < %s")
        params.append(before)
    buffer = io.BytesIO()
    # psycopg's own cursor: Django's debug wrapper (DEBUG=1, as `make run` runs) takes no COPY parameters
    with connection.cursor() as cursor, cursor.cursor.copy(_EVENTS_COPY.format(where=" AND ".join(where)), params) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    if not buffer.getbuffer().nbytes:
        return pd.DataFrame({"customer": [], "item": [], "type": [], "time": [], "value": []})
    return pd.read_csv(buffer, header=None, names=["customer", "item", "type", "time", "value"])


def _item_index(item_ids: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """Index 1..n of each item id in a sorted vocabulary; 0 for no item or one outside it."""
    if not len(vocabulary):
        return np.zeros(len(item_ids), dtype="int64")
    position = np.clip(np.searchsorted(vocabulary, item_ids), 0, len(vocabulary) - 1)
    return np.where((item_ids > 0) & (vocabulary[position] == item_ids), position + 1, 0).astype("int64")


def _sequences(frame: pd.DataFrame, vocabulary: np.ndarray, price_edges=None):
    from training.ml import data

    return data.sequences_build(
        customers=frame["customer"].to_numpy("int64"), items=_item_index(frame["item"].to_numpy("int64"), vocabulary),
        event_types=frame["type"].to_numpy("int64"), times=frame["time"].to_numpy("float64"),
        values=frame["value"].to_numpy("float64"), price_edges=price_edges,
    )


def training_dataset_read():
    """Every live customer's events as sequences, with the item vocabulary (index i ↔ item_ids[i-1])
    and a description of the snapshot. One COPY, no ORM objects."""
    seqs, vocabulary, described, _ = _training_read()
    return seqs, vocabulary, described


def _training_read():
    """training_dataset_read's sequences, vocabulary and description, and the flat frame they came
    from (the gate scores the active version on the same events)."""
    read_at = timezone.now()
    frame = _events_frame()
    vocabulary = np.unique(frame["item"][frame["item"] > 0].to_numpy("int64"))
    seqs = _sequences(frame, vocabulary)
    from privacy.models import ErasureLedger

    described = {"customers": int(len(seqs.customers)), "items": int(len(vocabulary)), "events": int(len(frame)),
                 "read_at": read_at.isoformat(),
                 # the manifest of who is not in it: erased subjects (their rows are gone) and opt-outs
                 "erased_subjects_excluded": ErasureLedger.objects.filter(erased_at__lte=read_at).count(),
                 "opted_out_excluded": Customer.objects.filter(consent_profiling=False).count()}
    return seqs, vocabulary.tolist(), described, frame


def _item_texts(item_ids: list[int]) -> dict[int, str]:
    from training.ml.content import item_text

    rows = Item.objects.filter(pk__in=item_ids).values_list("pk", "title", "category_path", "brand")
    return {pk: item_text(title or "", [c for c in (path or "").split("/") if c], brand or "") for pk, title, path, brand in rows}


def item_content_table(item_ids: list[int]) -> np.ndarray:
    """(len(item_ids) + 1, 384): the pretrained text encoder's vector of each vocabulary item's
    title, brand and categories (row 0 padding; an item without text gets zeros)."""
    from training.ml.content import text_vectors

    texts = _item_texts(item_ids)
    vectors = text_vectors([texts.get(i, "") for i in item_ids])
    return np.vstack([np.zeros((1, vectors.shape[1]), dtype="float32"), vectors])


def training_run_create(*, arch: str | None = None, config: dict | None = None, user=None) -> TrainingRun:
    """A pending run; refuses now, not in the worker, an unknown architecture or an embedding
    width the profile column cannot hold."""
    from training.ml.config import EncoderConfig

    arch = arch or settings.TRAINING_DEFAULT_ARCH
    EncoderConfig(arch=arch)
    dim = (config or {}).get("model", {}).get("dim", settings.TRAINING_MODEL_DEFAULTS["dim"])
    if dim != EMBEDDING_DIMENSIONS:
        raise ValueError(f"dim must be {EMBEDDING_DIMENSIONS}, the width of the profile embedding column")
    return TrainingRun.objects.create(arch=arch, config=config or {}, created_by=user)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_run_execute(*, run_id: int, activate, progress=None) -> TrainingRun | None:
    """Train a claimed run to the end; None if another worker holds it or it is done. Resumes from
    the run's last checkpoint when a previous attempt died.

    `progress(record, epochs)` is called once with record None before the first epoch and after
    every epoch (the command's progress bar). The epochs early stopping chose are then trained
    again on every event, the validation and test items included (TRAINING_REFIT): that refit is
    the version's artifact, what goes live; its metrics stay those of the held-out run, whose
    checkpoint the gate scores (metrics["selection_artifact"]). When the new version passes the
    gate, `activate(version, seqs)` puts it live (pipeline.flows.model_version_switch: the profiles'
    vectors are an app above this one) before the run is marked succeeded.

    Data-parallel (every rank of a torchrun launch calls this, training.launch): rank 0 claims the
    run, reads the dataset once and hands that snapshot and the configuration to the other ranks,
    and alone writes (history, version, gate, activation, status); the others train (and refit:
    every collective needs every rank) and return None without touching the database."""
    from training.ml import distributed
    from training.ml.config import EncoderConfig, TrainConfig
    from training.ml.content import CONTENT_DIM
    from training.ml.data import leave_one_out
    from training.ml.trainer import BEST, model_save, refit, train

    if not distributed.ranks().writer:
        plan = distributed.share()
        if plan is not None:
            result = train(**_train_args(plan))
            if plan["refit"] and result.best_epoch >= 0:  # the same epochs as rank 0's (early stopping is shared)
                refit(**_refit_args(plan), epochs=result.best_epoch + 1, upto="all")
        return None
    claimed = TrainingRun.objects.filter(pk=run_id, status__in=[RunStatus.PENDING, RunStatus.RUNNING]).update(
        status=RunStatus.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    if not claimed:
        distributed.share(None)
        return None
    run = TrainingRun.objects.get(pk=run_id)
    plan = None
    try:
        seqs, item_ids, described, frame = _training_read()
        model_args = {**settings.TRAINING_MODEL_DEFAULTS, **run.config.get("model", {})}
        use_content = bool(model_args.pop("content", False)) or bool(model_args.get("content_dim"))
        model_args.pop("content_dim", None)
        model_args.pop("price_edges", None)
        model_args.pop("n_items", None)
        model_args.pop("arch", None)
        if not item_ids:  # no item anywhere (CDNOW): the auxiliary heads are the whole objective
            model_args["aux_weight"] = max(float(model_args.get("aux_weight", 0.0)), 1.0)
            use_content = False
        model_config = EncoderConfig(
            arch=run.arch, n_items=len(item_ids), price_edges=tuple(seqs.price_edges.tolist()),
            content_dim=CONTENT_DIM if use_content else 0, **model_args,
        )
        train_config = TrainConfig(**{**settings.TRAINING_TRAIN_DEFAULTS, **run.config.get("train", {})})
        item_content = item_content_table(item_ids) if use_content else None
        # the creation time too: a database recreated beside an old models directory reuses run ids,
        # and a new run must never resume from another run's checkpoint
        directory = Path(settings.MODELS_DIR) / f"run-{run.pk}-{run.created_at:%Y%m%dT%H%M%S%f}"
        TrainingRun.objects.filter(pk=run.pk).update(
            dataset=described, config={"model": model_config.as_dict(), "train": train_config.as_dict()}
        )

        def on_epoch(record):
            TrainingRun.objects.filter(pk=run.pk).update(history=[*TrainingRun.objects.get(pk=run.pk).history, record],
                                                         heartbeat_at=timezone.now())
            if progress is not None:
                progress(record, train_config.epochs)

        if progress is not None:
            progress(None, train_config.epochs)
        split = leave_one_out(seqs)
        refit_after = bool(settings.TRAINING_REFIT and len(split.rows))
        plan = distributed.share({"seqs": seqs, "split": split, "model_config": model_config, "train_config": train_config,
                                  "checkpoint_dir": directory, "item_content": item_content, "refit": refit_after})
        result = train(**_train_args(plan), on_epoch=on_epoch)
        selection = directory / BEST
        metrics = {"valid": result.best_valid, "test": result.test, "best_epoch": result.best_epoch,
                   "selection_artifact": str(selection), "selection_sha256": _sha256(selection)}
        artifact = selection
        if refit_after and result.best_epoch >= 0:
            refitted = refit(**_refit_args(plan), epochs=result.best_epoch + 1, upto="all")
            artifact = directory / "refit.pt"
            model_save(refitted.model, model_config, artifact)
            metrics["refit"] = {"epochs": result.best_epoch + 1, "tokens": refitted.trained_tokens,
                                "seconds": round(sum(h["seconds"] for h in refitted.history), 3)}
        version = ModelVersion.objects.create(
            name=f"{run.arch}-{run.pk}", run=run, artifact_path=str(artifact), artifact_sha256=_sha256(artifact),
            item_ids=item_ids, metrics=metrics,
        )
        if model_version_gate(version=version, frame=frame, exclude_seen=train_config.exclude_seen):
            activate(version, seqs)
        TrainingRun.objects.filter(pk=run.pk).update(  # last: "succeeded" means gated and, if passed, live
            status=RunStatus.SUCCEEDED, finished_at=timezone.now(), device=result.device, metrics=result.test,
            history=result.history,
        )
    except Exception as exc:
        TrainingRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED, finished_at=timezone.now(),
            error="".join(traceback.format_exception_only(exc)).strip()[:10_000],
        )
        if plan is None:  # the other ranks still wait for the plan: let them go
            distributed.share(None)
        raise
    return TrainingRun.objects.get(pk=run.pk)


def training_run_create_if_idle(*, arch: str | None = None, config: dict | None = None, user=None) -> TrainingRun | None:
    """Create a pending run unless one is already pending or running (None then), so a double click
    or an overlapping schedule trains once. training.tasks.training_run_queue queues it."""
    with transaction.atomic():
        with connection.cursor() as cursor:  # serialises concurrent starts; released at commit
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('training_run_start'))")
        busy = TrainingRun.objects.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING]).exists()
        if busy:
            return None
        return training_run_create(arch=arch or settings.TRAINING_DEFAULT_ARCH, config=config, user=user)


def _train_args(plan: dict) -> dict:
    return {k: v for k, v in plan.items() if k != "refit"}


def _refit_args(plan: dict) -> dict:
    return {k: plan[k] for k in ("seqs", "split", "model_config", "train_config", "item_content")}


GATE_METRIC = "ndcg@10"


def model_version_gate(*, version: ModelVersion, frame: pd.DataFrame | None = None, exclude_seen: bool = True) -> bool:
    """A new version may become active only if it is not worse than the active one on validation
    NDCG@10, both scored here on the same data: the candidate's validation split of `frame` (the
    candidate run's own read; the store now when not given), same customers, same targets, same
    protocol. Each version is scored with its held-out model (the checkpoint early stopping chose,
    trained without the validation items; its artifact when it has no such checkpoint), and a
    target outside a version's vocabulary counts as a miss. Where either model cannot be loaded
    (no artifact, retired), the stored figures decide, as the record says. Records the decision on
    the version."""
    from privacy.models import ErasureLedger

    active = ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).first()
    stored = {"candidate": version.metrics.get("valid", {}).get(GATE_METRIC, 0.0),
              "active": active.metrics.get("valid", {}).get(GATE_METRIC, 0.0) if active else None}
    mine, theirs, basis = stored["candidate"], stored["active"], "stored"
    if active is not None:
        scored = _versions_score(candidate=version, active=active, frame=frame, exclude_seen=exclude_seen)
        if scored is not None:
            mine, theirs, basis = scored["candidate"], scored["active"], scored
    # a version owed to the unlearning policy (trained on an erased subject) never blocks the
    # version that replaces it, or it would stay active past its deadline
    owed = active is not None and ErasureLedger.objects.filter(
        retired_at__isnull=True, model_versions__contains=[active.pk]).exists()
    passed = theirs is None or mine >= theirs or owed
    version.gate = {"metric": f"valid {GATE_METRIC}", "candidate": mine, "active": theirs,
                    "active_version": active.pk if active else None, "passed": passed,
                    "basis": "same data" if isinstance(basis, dict) else "stored",
                    "stored": stored,
                    **({"customers": basis["customers"], "exclude_seen": exclude_seen} if isinstance(basis, dict) else {}),
                    **({"unlearning": "the active version was trained on an erased subject's data"} if owed else {})}
    version.save(update_fields=["gate"])
    return passed


def _selection_model(version: ModelVersion):
    """The version's held-out model (see model_version_gate), or None when it cannot be read."""
    from training.ml.trainer import model_load

    path = version.metrics.get("selection_artifact") or version.artifact_path
    checksum = version.metrics.get("selection_sha256") if version.metrics.get("selection_artifact") else version.artifact_sha256
    if not path or not Path(path).is_file() or _sha256(Path(path)) != checksum:
        return None
    return model_load(Path(path))


def _versions_score(*, candidate: ModelVersion, active: ModelVersion, frame, exclude_seen: bool) -> dict | None:
    """Both versions' validation NDCG@10 on the candidate's validation split of `frame`."""
    from training.ml.data import leave_one_out
    from training.ml.trainer import evaluate

    models = {"candidate": _selection_model(candidate), "active": _selection_model(active)}
    if any(m is None for m in models.values()):
        return None
    frame = _events_frame() if frame is None else frame
    vocabularies = {"candidate": np.asarray(candidate.item_ids, dtype="int64"),
                    "active": np.asarray(active.item_ids, dtype="int64")}
    seqs = {name: _sequences(frame, vocabularies[name], price_edges=models[name].config.price_edges) for name in models}
    split = leave_one_out(seqs["candidate"])  # the same rows: both read the same frame in the same order
    if not len(split.rows):
        return None
    # the candidate's targets as item ids, then as the active version's indices (0: not in its vocabulary, a miss)
    target_ids = vocabularies["candidate"][split.valid_item - 1]
    targets = {"candidate": split.valid_item, "active": _item_index(target_ids, vocabularies["active"])}
    out = {"customers": int(len(split.rows))}
    for name, model in models.items():
        out[name] = evaluate(model, seqs[name], split.rows, split.valid_cut, targets[name], k=10,
                             device=next(model.parameters()).device, exclude_seen=exclude_seen)[GATE_METRIC]
    return out


def model_version_encode(*, version: ModelVersion, customer_ids, seqs=None, batch_customers: int = 2048):
    """These customers' embeddings under a version, in batches of (customer ids, vectors): from
    `seqs` (the run's own read) when given, else from the store."""
    import torch

    from training.ml.data import batch_of

    model = _version_model(version)
    if seqs is None:
        frame = _events_frame()
        seqs = _sequences(frame, np.asarray(version.item_ids, dtype="int64"), price_edges=model.config.price_edges)
    wanted = {int(c) for c in customer_ids}
    rows = np.array([i for i, c in enumerate(seqs.customers) if int(c) in wanted], dtype="int64")
    for start in range(0, len(rows), batch_customers):
        part = rows[start:start + batch_customers]
        with torch.no_grad():
            vectors = model.user_embedding(batch_of(seqs, part, model.config.max_len)).numpy()
        yield seqs.customers[part], vectors


def model_version_mark_active(*, version: ModelVersion) -> None:
    """Write the version's item embeddings, then make it the active version (after the profiles
    carry its customer embeddings: similarity compares vectors of one version only, so search never
    mixes old and new embeddings during the switch)."""
    item_embeddings_write(version=version)
    with transaction.atomic():
        ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())


def _version_model(version: ModelVersion):
    if _sha256(Path(version.artifact_path)) != version.artifact_sha256:
        raise RuntimeError(f"artifact of model version {version.pk} does not match its checksum")
    return _model_of(version.pk, version.artifact_path, version.artifact_sha256)


@functools.lru_cache(maxsize=2)
def _model_of(version_id: int, path: str, checksum: str):
    """A loaded encoder per (version, checksum): a worker loads the active model once, not per event."""
    from training.ml.trainer import model_load

    return model_load(Path(path))


@functools.lru_cache(maxsize=2)
def _vocabulary_of(version_id: int, checksum: str) -> np.ndarray:
    """A version's item ids (fixed once trained), read once per process, not per refresh. Keyed by
    the artifact's checksum too: a restored or re-created database may reuse a version's id."""
    return np.asarray(ModelVersion.objects.values_list("item_ids", flat=True).get(pk=version_id), dtype="int64")


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).defer("item_ids").first()


def customer_embeddings_encode(*, customer_ids: list[int], version: ModelVersion, before=None) -> dict[int, np.ndarray]:
    """These customers' embeddings under a version, from their events (before a time, when given:
    how the fusion weight is tuned without looking at the period it is tuned to predict)."""
    import torch

    from training.ml.data import batch_of

    model = _model_of(version.pk, version.artifact_path, version.artifact_sha256)
    frame = _events_frame(customer_ids=customer_ids, before=before)
    if frame.empty:
        return {}
    seqs = _sequences(frame, _vocabulary_of(version.pk, version.artifact_sha256), price_edges=model.config.price_edges)
    out = {}
    for start in range(0, len(seqs.customers), 2048):
        part = np.arange(start, min(start + 2048, len(seqs.customers)))
        with torch.no_grad():
            vectors = model.user_embedding(batch_of(seqs, part, model.config.max_len)).numpy()
        out.update({int(c): v for c, v in zip(seqs.customers[part], vectors, strict=True)})
    return out


def item_embeddings_write(*, version: ModelVersion, model=None) -> dict:
    """Write the version's item vectors: every vocabulary item from the trained table, and, when
    the model reads item content, every other catalogue item from its text alone (cold items)."""
    import torch

    model = model or _version_model(version)
    vocabulary = list(version.item_ids)
    with torch.no_grad():
        table = model.item_embeddings().float().numpy()[1:]
    rows = list(zip(vocabulary, table, [False] * len(vocabulary), strict=True))
    if model.config.content_dim:
        from training.ml.content import text_vectors

        unseen = list(Item.objects.exclude(pk__in=vocabulary).values_list("pk", flat=True))
        if unseen:
            texts = _item_texts(unseen)
            with torch.no_grad():
                projected = model.tokens.content_projection(torch.from_numpy(text_vectors([texts[i] for i in unseen]))).numpy()
            rows += [(i, v, True) for i, v, t in zip(unseen, projected, [texts[i] for i in unseen], strict=True) if t]
    with transaction.atomic(), connection.cursor() as cursor:
        ItemEmbedding.objects.filter(model_version=version).delete()
        with cursor.copy(
            "COPY training_itemembedding (item_id, model_version_id, embedding, from_content_only) FROM STDIN"
        ) as copy:
            for item_id, vector, content_only in rows:
                copy.write_row([int(item_id), version.pk, _vector_text(vector), content_only])
        cursor.execute("ANALYZE training_itemembedding")
    return {"items": len(rows), "from_content_only": sum(1 for r in rows if r[2])}


def _vector_text(vector) -> str:
    return "[" + ",".join(f"{v:.6g}" for v in vector) + "]"


def model_version_retire(*, version: ModelVersion, reason: str) -> None:
    """Retire a version for good: its checkpoint directory and item vectors are deleted and it can
    never be activated again (unlearning after an erasure). Idempotent."""
    import shutil

    if version.artifact_path:
        directory = Path(version.artifact_path).parent
        if directory.is_dir():
            shutil.rmtree(directory, ignore_errors=True)
    with transaction.atomic():
        ItemEmbedding.objects.filter(model_version=version).delete()
        ModelVersion.objects.filter(pk=version.pk).update(
            is_active=False, artifact_path="", artifact_sha256="", gate={**version.gate, "retired": reason},
        )
