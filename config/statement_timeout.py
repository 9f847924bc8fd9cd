"""Web requests run their queries under WEB_STATEMENT_TIMEOUT_MS, so one expensive request cannot
hold a database backend (and a web worker) for minutes; workers run without a limit (builds and fits
run long by design). A cancelled query answers 503 naming the limit, with Retry-After: the
connection is fine, so unlike a lost database nothing is healed."""

from django.conf import settings
from django.db import OperationalError
from django.db.backends.signals import connection_created
from django.http import JsonResponse

RETRY_AFTER_S = 5


def _timeout_set(sender, connection, **kwargs):
    milliseconds = int(settings.WEB_STATEMENT_TIMEOUT_MS)
    if milliseconds > 0 and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET statement_timeout = {milliseconds}")


def web_statement_timeout_install() -> None:
    """Called once by the web process (config.wsgi): every connection it opens gets the limit."""
    connection_created.connect(_timeout_set, dispatch_uid="portrait-web-statement-timeout")


def web_statement_timeout_uninstall() -> None:
    connection_created.disconnect(dispatch_uid="portrait-web-statement-timeout")


def is_statement_timeout(exc: BaseException) -> bool:
    from psycopg.errors import QueryCanceled

    return isinstance(exc, OperationalError) and isinstance(exc.__cause__, QueryCanceled)


def statement_timeout_response() -> JsonResponse:
    response = JsonResponse({
        "error": "statement_timeout",
        "detail": f"A query of this request ran past WEB_STATEMENT_TIMEOUT_MS ({settings.WEB_STATEMENT_TIMEOUT_MS} ms) "
                  "and was cancelled: ask for less (fewer seeds, a smaller n or k, a narrower rule) or retry later.",
    }, status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response
