"""Django's PostgreSQL backend with a health check that costs no round trip while the connection is
healthy.

CONN_HEALTH_CHECKS (on: a reused connection that the server dropped, say after a restart, is replaced
before the request uses it, instead of failing it) makes Django's backend send `SELECT 1` at the start
of every request that touches the database: one round trip per request beside the three queries of a
similar search (bench/api_load.py). A server that ends a connection (restart, pg_terminate_backend, idle
timeout) sends its notice and closes the socket, so a connection idle between requests that has something
to read was dropped, or at least was spoken to unasked: then, and only then, the backend asks the
server with its `SELECT 1` as before. A connection with nothing to read is as usable as the server
last left it; a peer that vanished without closing (a cut network) is found by the request's first query,
which the `SELECT 1` would have met the same way."""

import select

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self):
        if self.connection is None:
            return False
        pgconn = self.connection.pgconn
        if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return super().is_usable()
        try:
            poller = select.poll()
            poller.register(pgconn.socket, select.POLLIN)
            unasked = poller.poll(0)
        except (OSError, psycopg.Error):
            return False
        return super().is_usable() if unasked else True
