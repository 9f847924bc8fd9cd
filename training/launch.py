"""Launching a data-parallel training run: `torchrun --standalone` starts `manage.py train --run-id`
in as many processes as TRAINING_WORLD_SIZE on this host, each a rank of one DDP process group
(training/ml/distributed.py); rank 0 writes the registry (services.training_run_execute). More
than one host: run the same command under torchrun on each (README "Scale-out")."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.utils import timezone

from training.models import ModelVersion, RunStatus, TrainingRun


def ranks_environment() -> dict[str, str]:
    """The environment of the ranks: this process's, with the database, broker, cache and models
    directory this process actually uses (they may have been chosen after it started)."""
    database = settings.DATABASES["default"]
    env = dict(os.environ, MODELS_DIR=str(settings.MODELS_DIR), CACHE_URL=settings.CACHES["default"]["LOCATION"],
               CELERY_BROKER_URL=current_app.conf.broker_url, CELERY_RESULT_BACKEND=str(current_app.conf.result_backend))
    if os.environ.get("DATABASE_URL"):
        base, _, _ = os.environ["DATABASE_URL"].rpartition("/")
        env["DATABASE_URL"] = f"{base}/{database['NAME']}"
    else:
        env["EMBEDDED_DATABASE_NAME"] = database["NAME"]
    return env


def training_run_command(*, run_id: int, world_size: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world_size),
            "--max-restarts", "0", str(Path(settings.BASE_DIR) / "manage.py"), "train", "--run-id", str(run_id),
            "--no-rebuild"]


def _end_with_the_caller() -> None:
    """In the launched torchrun, before it starts: on Linux it gets SIGTERM (and stops its ranks) when
    the process waiting for it dies, so a killed worker leaves no orphan run behind to race the
    redelivered task's launch."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def training_run_launch(*, run_id: int, world_size: int) -> tuple[TrainingRun | None, bool]:
    """Train a pending (or interrupted) run with `world_size` processes and wait for them. Returns
    (the run, whether its version went live), (None, False) when the run is finished already. A
    launch that dies without rank 0 recording why (killed, a rank that could not start) marks the
    run failed with the exit status; the launch's output goes to this process's."""
    if not TrainingRun.objects.filter(pk=run_id, status__in=[RunStatus.PENDING, RunStatus.RUNNING]).exists():
        return None, False
    done = subprocess.run(training_run_command(run_id=run_id, world_size=world_size), cwd=settings.BASE_DIR,
                          env=ranks_environment(), check=False, preexec_fn=_end_with_the_caller)
    if done.returncode != 0:
        TrainingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
            status=RunStatus.FAILED, finished_at=timezone.now(),
            error=f"the {world_size}-process training launch exited with status {done.returncode}")
        raise RuntimeError(f"training run {run_id}: the {world_size}-process launch exited with status {done.returncode}")
    return TrainingRun.objects.get(pk=run_id), ModelVersion.objects.filter(run_id=run_id, is_active=True).exists()
