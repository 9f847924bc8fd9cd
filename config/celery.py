"""The Celery application: Redis broker, JSON only, routes by queue (config.queues)."""

import logging
import os

from celery import Celery, signals
from django.db import InterfaceError, OperationalError
from kombu import Exchange
from kombu import Queue as KombuQueue
from kombu.utils.url import maybe_sanitize_url

from config.queues import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

logger = logging.getLogger(__name__)

app = Celery("portrait")
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
