"""DRF exception handler: errors are data with a stable shape ({"error": code, "detail": text}); and
the code a client sees for a recorded failure."""

import logging

from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.celery import BROKER_ERRORS

logger = logging.getLogger(__name__)
BROKER_RETRY_AFTER_S = 5


def exception_handler(exc, context):
    from config.db_unavailable import database_unavailable_response, is_database_unavailable

    from config.statement_timeout import is_statement_timeout, statement_timeout_response

    if is_database_unavailable(exc):
        return database_unavailable_response()
    if is_statement_timeout(exc):
        return statement_timeout_response()
    if isinstance(exc, BROKER_ERRORS):
        # Redis (broker, queued-refresh marks) away: a request that must queue work can heal by
        # itself, so the client is told to retry, as for a lost database (bench/chaos.py found 500s)
        logger.warning("%s answered 503: broker unavailable (%s: %s)", context["request"].path,
                       exc.__class__.__name__, exc)
        return Response({"error": "broker_unavailable",
                         "detail": f"The task queue is not reachable just now; retry in {BROKER_RETRY_AFTER_S} seconds."},
                        status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(BROKER_RETRY_AFTER_S)})
    if isinstance(exc, RequestDataTooBig):
        from django.conf import settings

        return Response(
            {"error": "payload_too_large",
             "detail": f"Body exceeds the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        detail = response.data["detail"]
        response.data = {"error": getattr(detail, "code", "error"), "detail": str(detail)}
    return response


def error_class(recorded: str) -> str:
    """The exception class of a failure recorded as "Class: text" (what a job stores for operators).
    Clients get only the class: the text may name hosts, paths, SQL or a subject's data."""
    if not recorded:
        return ""
    name = recorded.split(":", 1)[0].strip()
    return name if name.isidentifier() else "error"
