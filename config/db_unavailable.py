"""While the database is away, web requests answer 503 with Retry-After instead of 500.

A lost connection surfaces as django.db.OperationalError / InterfaceError. The API maps it in
config.api_errors, other views through `DatabaseUnavailableMiddleware.process_exception`, and what
fails outside a view (a middleware's own query) through `server_error`, the handler500. Each also
asks the embedded server to heal (config.embedded_db), in the background so the request answers at
once; CONN_HEALTH_CHECKS then gives the next request a fresh connection.
"""

import sys

from django.db import InterfaceError, OperationalError, connections
from django.http import JsonResponse
from django.views import defaults

from config.embedded_db import heal_embedded_database

DATABASE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_S = 5
ERROR_BODY = {"error": "database_unavailable",
              "detail": f"The database is not reachable just now; retry in {RETRY_AFTER_S} seconds."}


def is_database_unavailable(exc: BaseException) -> bool:
    """A lost or refused connection, not a query error: OperationalError is also raised for e.g. a
    statement timeout or a serialization failure, where the connection itself is still fine."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    # a replica alias that was never connected in this thread is not a lost connection
    return any(_lost(connection.connection) for connection in connections.all(initialized_only=True)
               if connection.alias == "default" or connection.connection is not None)


def _lost(raw) -> bool:
    """No connection (connecting failed) or a psycopg connection that is closed or broken."""
    return raw is None or raw.closed or getattr(raw, "broken", False)


def database_unavailable_response() -> JsonResponse:
    for connection in connections.all():
        connection.close_if_unusable_or_obsolete()
    heal_embedded_database(wait=False)
    response = JsonResponse(ERROR_BODY, status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        from config.statement_timeout import is_statement_timeout, statement_timeout_response

        if is_database_unavailable(exception):
            return database_unavailable_response()
        if is_statement_timeout(exception):
            return statement_timeout_response()
        return None


def server_error(request, *args, **kwargs):
    exc = sys.exc_info()[1]
    if exc is not None and is_database_unavailable(exc):
        return database_unavailable_response()
    return defaults.server_error(request, *args, **kwargs)
