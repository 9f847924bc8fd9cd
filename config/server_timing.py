"""A `Server-Timing: app;dur=…, db;dur=…, cpu;dur=…` response header (W3C Server Timing, milliseconds):
the request's time inside Django, the part of it spent in database queries (summed over every
connection by an execute wrapper), and the CPU time the worker's thread used in it (less than `app`
by the waits for the database and, when more processes than cores are runnable, for a core). On when
SERVER_TIMING is set; bench/api_load.py reads it."""

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
            started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
            response = get_response(request)
            app_ms = (time.perf_counter_ns() - started) / 1e6
            cpu_ms = (time.thread_time_ns() - cpu_started) / 1e6
        response["Server-Timing"] = f"app;dur={app_ms:.2f}, db;dur={db_ns / 1e6:.2f}, cpu;dur={cpu_ms:.2f}"
        return response

    return middleware
