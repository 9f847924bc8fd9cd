"""Celery tasks of the privacy app (queue `default`)."""

from celery import shared_task

from config.celery import IDEMPOTENT_TASK



@shared_task(**IDEMPOTENT_TASK)
def unlearning_retire_task() -> dict:
    return unlearning_retire()


def unlearning_retire(*, now=None) -> dict:
    """Daily: retire versions trained on erased subjects' data, or queue the retraining that must
    replace the active one first (nothing is queued while a run is pending or running)."""
    from privacy.unlearning import unlearning_retire_due
    from training.tasks import training_run_queue

    result = unlearning_retire_due(now=now)
    result["retraining_queued"] = bool(result["retraining_needed"]) and training_run_queue() is not None
    return result


@shared_task(**IDEMPOTENT_TASK)
def access_exports_expire_task() -> int:
    """Hourly: expired access exports are deleted, not just refused."""
    from privacy.export import access_exports_expire

    return access_exports_expire()


@shared_task(**IDEMPOTENT_TASK)
def privacy_requests_retry_task() -> int:
    """Requests left partially failed (an error, a lost connection) or still executing long after
    their process died (a SIGKILL, a lost machine) are executed again."""
    from privacy.selectors import privacy_requests_retryable
    from privacy.services import RequestError, privacy_request_execute

    retried = 0
    for request in privacy_requests_retryable():
        try:
            privacy_request_execute(request=request)
            retried += 1
        except RequestError:  # another process took it meanwhile
            continue
        except Exception:  # recorded on the request; the next run tries again
            continue
    return retried
