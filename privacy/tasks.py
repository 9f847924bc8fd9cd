"""Celery tasks of the privacy app (queue `default`)."""

from celery import shared_task

from config.celery import IDEMPOTENT_TASK

_RETRY = IDEMPOTENT_TASK


@shared_task(**_RETRY)
def unlearning_retire_task() -> dict:
    from privacy.unlearning import unlearning_retire_due

    return unlearning_retire_due()


@shared_task(**_RETRY)
def privacy_requests_retry_task() -> int:
    """Requests left partially failed (a crash, a lost connection) are executed again."""
    from privacy.models import PrivacyRequest, RequestState
    from privacy.services import privacy_request_execute

    retried = 0
    for request in PrivacyRequest.objects.filter(state=RequestState.PARTIALLY_FAILED, attempts__lt=5):
        try:
            privacy_request_execute(request=request)
            retried += 1
        except Exception:  # recorded on the request; the next run tries again
            continue
    return retried
