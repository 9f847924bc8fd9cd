"""The Celery application: Redis broker, JSON only, routes by queue (config.queues)."""

import logging
import os

from celery import Celery, Task, signals
from celery.utils.dispatch import Signal
from django.db import InterfaceError, OperationalError
from redis import RedisError
from kombu import Exchange
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu import Queue as KombuQueue
from kombu.utils.url import maybe_sanitize_url

from config.queues import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)

app = Celery("portrait", task_cls="config.celery:PortraitTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each queue its own direct exchange and routing key: a task routed to one queue lands only there.
app.conf.task_queues = [KombuQueue(q.value, Exchange(q.value, type="direct"), routing_key=q.value) for q in Queue]
app.conf.task_routes = {
    "ingestion.tasks.*": {"queue": Queue.INGEST.value},
    "profiles.tasks.*": {"queue": Queue.PROFILES.value},
    "segments.tasks.*": {"queue": Queue.SEGMENTS.value},
    "crm.tasks.*": {"queue": Queue.PROFILES.value},
    "training.tasks.*": {"queue": Queue.TRAINING.value},
}
app.autodiscover_tasks()


# Options of an idempotent task: acknowledged after it ran (a worker that dies mid-task leaves it for
# another), retried with backoff only when the database connection was lost.
IDEMPOTENT_TASK = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 5,
}


class BrokerUnavailable(RuntimeError):
    pass


# What sending to the broker (or touching its Redis) raises while the broker is away.
BROKER_ERRORS = (RedisError, KombuOperationalError, BrokerUnavailable)


def broker_check(timeout: float = 2.0) -> None:
    """Raise BrokerUnavailable with one line that says how to start Redis if nobody answers."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:  # kombu raises several transport-specific errors
        # the URL goes to the server log only, without its password: admin messages are read by operators
        logger.warning("no Celery broker at %s (%s)", maybe_sanitize_url(app.conf.broker_url), exc.__class__.__name__)
        raise BrokerUnavailable(
            f"No Celery broker answers ({exc.__class__.__name__}; CELERY_BROKER_URL). Start Redis: "
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
        ) from exc


@signals.task_retry.connect
@signals.task_failure.connect
def _heal_database_after_connection_loss(sender=None, reason=None, exception=None, **kwargs):
    """A task that lost the database restarts the embedded server (if that is the one in use) before
    its retry runs; Celery's Django fix-up drops the dead connection before the next task."""
    error = getattr(reason, "exc", reason) if reason is not None else exception  # Retry wraps the cause
    if isinstance(error, (OperationalError, InterfaceError)):
        from config.embedded_db import heal_embedded_database

        heal_embedded_database(wait=True)


# --- Deliveries and dead letters -------------------------------------------------------------------

# Sent (in the worker) when a task is given up: it failed for good, or it was delivered more than
# TASK_MAX_DELIVERIES times without finishing. Receivers record it (pipeline.tasks: the DeadLetter
# the admin shows).
task_dead_lettered = Signal(name="task_dead_lettered", providing_args={
    "task_id", "task_name", "args", "kwargs", "error", "deliveries"})

_DELIVERIES_KEY = "portrait:task-deliveries:{}"
_LAST_ERROR_KEY = "portrait:task-last-error:{}"
_DELIVERIES_TTL_S = 7 * 24 * 3600


def _broker_redis():
    from config.broker_redis import broker_redis

    return broker_redis()


def task_deliveries(task_id: str) -> int:
    """How many times this task id has started on a worker so far (retries and redeliveries alike)."""
    value = _broker_redis().get(_DELIVERIES_KEY.format(task_id))
    return int(value) if value else 0


class PortraitTask(Task):
    """Base of every task: counts the deliveries of each task id (a retry and a redelivery after a
    lost worker keep the id) in the broker's Redis. A task delivered more than TASK_MAX_DELIVERIES
    times is not run again: it is dead-lettered (task_dead_lettered) and acknowledged, so a poison
    message (one that kills its worker, or fails and retries for ever) cannot block its queue."""

    def __call__(self, *args, **kwargs):
        from django.conf import settings

        task_id = self.request.id
        # Celery's own tasks (chord_unlock polls by retrying, as often as it takes) are not counted
        if task_id is None or self.request.is_eager or self.request.called_directly or self.name.startswith("celery."):
            return super().__call__(*args, **kwargs)
        try:
            client = _broker_redis()
            key = _DELIVERIES_KEY.format(task_id)
            deliveries, _ = client.pipeline().incr(key).expire(key, _DELIVERIES_TTL_S).execute()
            last_error = client.get(_LAST_ERROR_KEY.format(task_id))
        except RedisError:  # the counter is away; running the task is the safer side
            return super().__call__(*args, **kwargs)
        if deliveries > settings.TASK_MAX_DELIVERIES:
            error = (last_error.decode() if last_error else
                     "the worker was lost while running it (killed, out of memory or crashed)")
            logger.error("task %s[%s] dead-lettered after %d deliveries: %s", self.name, task_id, deliveries - 1, error)
            task_dead_lettered.send(sender=self, task_id=task_id, task_name=self.name, args=list(args),
                                    kwargs=dict(kwargs), error=error, deliveries=deliveries - 1)
            return None
        return super().__call__(*args, **kwargs)


@signals.task_retry.connect
def _remember_last_error(request=None, reason=None, **kwargs):
    """Keep the reason of the last retry, for the dead letter of a task that never gets through."""
    error = getattr(reason, "exc", reason)
    if request is not None and request.id:
        try:
            _broker_redis().set(_LAST_ERROR_KEY.format(request.id), f"{error.__class__.__name__}: {error}"[:2000],
                                ex=_DELIVERIES_TTL_S)
        except RedisError as exc:
            logger.warning("last error of task %s not kept: %s", request.id, exc)


@signals.task_failure.connect
def _dead_letter_after_failure(sender=None, task_id=None, exception=None, args=None, kwargs=None, **rest):
    """A task that failed for good (an error it does not retry, or its retries spent) is dead-lettered
    with the error."""
    if sender is None or task_id is None:
        return
    try:
        deliveries = task_deliveries(task_id)
    except RedisError:
        deliveries = 0
    task_dead_lettered.send(sender=sender, task_id=task_id, task_name=sender.name, args=list(args or ()),
                            kwargs=dict(kwargs or {}), error=f"{exception.__class__.__name__}: {exception}",
                            deliveries=deliveries)
