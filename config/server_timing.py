"""A `Server-Timing: app;dur=…, db;dur=…` response header (W3C Server Timing, milliseconds): the
request's time inside Django and the part of it spent in database queries, summed over every
connection by an execute wrapper. On when SERVER_TIMING is set; bench/api_load.py reads it."""

import time
from contextlib import ExitStack

from django.conf import settings
from django.db import connections


def server_timing_middleware(get_response):
    def middleware(request):
        if not settings.SERVER_TIMING:
            return get_response(request)
        db_ns = 0

        def timed(execute, sql, params, many, context):
            nonlocal db_ns
            started = time.perf_counter_ns()
            try:
                return execute(sql, params, many, context)
            finally:
                db_ns += time.perf_counter_ns() - started

        with ExitStack() as stack:
            for alias in connections:
                stack.enter_context(connections[alias].execute_wrapper(timed))
            # the request's time, not the wrappers' set-up and tear-down
            started = time.perf_counter_ns()
            response = get_response(request)
            app_ms = (time.perf_counter_ns() - started) / 1e6
        response["Server-Timing"] = f"app;dur={app_ms:.2f}, db;dur={db_ns / 1e6:.2f}"
        return response

    return middleware
