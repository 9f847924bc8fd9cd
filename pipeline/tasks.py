"""Where the Celery machinery meets the pipeline app: every task given up on (config.celery's
task_dead_lettered) becomes a DeadLetter the admin shows."""

import logging

from django.db import DatabaseError

from config.celery import app as celery_app
from config.celery import task_dead_lettered
from pipeline import services

logger = logging.getLogger(__name__)


@task_dead_lettered.connect
def _dead_letter_store(sender=None, task_id=None, task_name=None, args=None, kwargs=None, error="", deliveries=0,
                       **rest):
    try:
        services.dead_letter_record(task_id=task_id, task_name=task_name, args=_json_safe(args or []),
                                    kwargs=_json_safe(kwargs or {}), error=error, deliveries=deliveries)
    except DatabaseError as exc:  # the log line of PortraitTask / the failure still says it
        logger.error("dead letter of %s[%s] not stored: %s", task_name, task_id, exc)


def _json_safe(value):
    import json

    return json.loads(json.dumps(value, default=str))


def dead_letters_requeue(*, letters) -> int:
    """Send these dead-lettered tasks again (new task ids, so their deliveries count from zero),
    then delete their letters. Returns how many were sent; raises one of BROKER_ERRORS if the
    broker is away (the letters stay)."""
    sent = []
    for letter in letters:
        celery_app.send_task(letter.task_name, args=letter.args, kwargs=letter.kwargs)
        sent.append(letter.pk)
    services.dead_letters_delete(ids=sent)
    return len(sent)
