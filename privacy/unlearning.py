"""The unlearning policy (README "Privacy"): a model version trained while an erased subject's data
was in the store is retired within PRIVACY_MODEL_RETIREMENT_DAYS of the erasure.

Daily, for each erasure whose deadline has come: if the active version was trained after the
erasure, every listed version is retired (its checkpoint directory deleted, its item vectors
removed, never to be activated again); otherwise a retraining run is due (privacy.tasks queues it), which reads the store
without the subject, and retirement follows once its version is active. Retraining also rewrites
the item vectors, so they no longer carry anything learned from the subject."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from privacy.models import ErasureLedger


def unlearning_retire_due(*, now=None) -> dict:
    """Retire what is due; "retraining_needed" says that a run must be queued first (the caller's,
    privacy.tasks: services never queue)."""
    from training.models import ModelVersion
    from training.services import model_version_active, model_version_retire

    now = now or timezone.now()
    due = list(ErasureLedger.objects.filter(retired_at__isnull=True, retire_by__lte=now).order_by("erased_at"))
    if not due:
        return {"due": 0, "retired_versions": 0, "retraining_needed": False}
    active = model_version_active()
    retired, retrain = 0, False
    for ledger in due:
        clean = active is not None and active.created_at > ledger.erased_at and active.pk not in ledger.model_versions
        if not clean and active is not None:
            retrain = True
            continue
        with transaction.atomic():
            for version in ModelVersion.objects.filter(pk__in=ledger.model_versions).exclude(artifact_path=""):
                model_version_retire(version=version, reason="trained on data of an erased subject")
                retired += 1
            ErasureLedger.objects.filter(pk=ledger.pk).update(retired_at=now)
    return {"due": len(due), "retired_versions": retired, "retraining_needed": retrain}
