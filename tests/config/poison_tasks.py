"""Tasks that only tests load (a worker started with `--include tests.config.poison_tasks`): poison
messages, and a good task to show the queue still moves."""

import os
import signal

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True)
def poison_kill_task(note: str) -> None:
    """Kills the worker process running it, every time (as a segfault or the OOM killer would)."""
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(acks_late=True, autoretry_for=(RuntimeError,), max_retries=None, default_retry_delay=0)
def poison_retry_task(note: str) -> None:
    """Fails every time with an error it is told to retry, for ever."""
    raise RuntimeError(f"poison: fails every time ({note})")


@shared_task(acks_late=True)
def broken_task(note: str) -> None:
    """Fails at once with an error it does not retry."""
    raise ValueError(f"broken input: {note}")


@shared_task(acks_late=True)
def good_task(x: int) -> int:
    return x * 2
