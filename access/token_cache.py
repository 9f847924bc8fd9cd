"""Active API tokens kept in each process between requests, dropped the moment any token changes.

Looking the token up was a query on every API request. Each process now keeps the tokens it served
and holds one LISTEN connection to the primary on `CHANNEL`, which a trigger on access_apitoken
(migration access 0005) notifies on every update (but the once-a-minute stamp of use), delete and
truncate, whoever writes: the services, the admin, plain SQL. Before each lookup the process drains
that connection without waiting (a poll of its socket, no round trip), and any notification empties
the cache. So a revocation, a moved expiry or a changed scope takes effect on the first request
that starts after the change committed and its notification arrived (on one host, well under a
millisecond later); in the process that made the change through the services, on its next request
(they empty its cache at commit).

The cache does not answer
- inside a transaction on the primary: a change made in it notifies nobody before it commits (and the
  tests run inside one);
- while no listening connection is up, or the table's triggers are dropped or disabled (checked when
  a connection starts listening): every lookup reads the table, as before, and a new connection is
  tried every `LISTEN_RETRY_S`; it starts with an empty cache, so notifications missed meanwhile do
  not matter.
An entry is also dropped after `MAX_AGE_S` whatever it hears (a connection that died without a word,
say), expiry is checked on every request against the token's `expires_at`, and a miss reads the
primary, never a replica, which could still show a token as it was before a change already announced.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

CHANNEL = "portrait_api_token_changed"
# the triggers that notify CHANNEL (migration access 0005); the cache answers only while both are enabled
TRIGGERS = ("access_apitoken_changed", "access_apitoken_removed")
_TRIGGERS_ENABLED = (
    "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'access_apitoken'::regclass AND tgenabled <> 'D'"
    f" AND tgname IN ({', '.join(repr(name) for name in TRIGGERS)})"
)
LISTEN_RETRY_S = 5.0
MAX_AGE_S = 60.0


class TokenCache:
    def __init__(self):
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[object, float]] = {}
        self._listener: psycopg.Connection | None = None
        self._poll: select.poll | None = None
        self._goodbye = False
        self._pid: int | None = None
        self._retry_at = 0.0
        # bumped whenever the cache is emptied: a lookup that read the table before that does not store
        self._generation = 0

    def generation(self) -> int | None:
        """The cache's generation once it has heard every notification that arrived, or None when it
        may not answer now (in a transaction on the primary, or no listener)."""
        if connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return None
        with self._lock:
            if not self._listening():
                return None
            return self._generation

    def get(self, prefix: str, generation: int):
        with self._lock:
            if generation != self._generation:
                return None
            entry = self._tokens.get(prefix)
            if entry is None or entry[1] <= time.monotonic():
                return None
            return entry[0]

    def put(self, prefix: str, token, generation: int) -> None:
        with self._lock:
            if generation == self._generation:  # losing the listener empties the cache: a new generation
                self._tokens[prefix] = (token, time.monotonic() + MAX_AGE_S)

    def forget(self) -> None:
        with self._lock:
            self._empty()

    def close(self) -> None:
        """Stop listening (the next lookup that may use the cache listens again)."""
        with self._lock:
            self._drop_listener()
            self._retry_at = 0.0

    def _listening(self) -> bool:
        if self._pid != os.getpid():  # a forked child must not read its parent's socket
            self._listener, self._pid = None, os.getpid()
            self._empty()
        if self._listener is None and not self._listen():
            return False
        try:
            pgconn = self._listener.pgconn
            heard = False
            for _ in range(16):
                pgconn.consume_input()  # reads what arrived, never waits
                while pgconn.notifies() is not None:
                    heard = True
                # the server's goodbye (an error on an idle connection, which libpq hands on as a notice)
                # arrives before the socket closes; a connection that only listens hears no other notice
                if pgconn.status != psycopg.pq.ConnStatus.OK or self._goodbye:
                    raise psycopg.OperationalError("the listening connection is closed")
                if not self._poll.poll(0):
                    break
                # still readable after reading everything: more came, or the server closed it (the next read says)
            if heard:
                self._empty()
        except psycopg.Error as exc:
            logger.warning("API token cache off: its listening connection failed (%s)", exc.__class__.__name__)
            self._drop_listener()
            return False
        return True

    def _listen(self) -> bool:
        if time.monotonic() < self._retry_at:
            return False
        params = connections[DEFAULT_DB_ALIAS].get_connection_params()
        for unused in ("cursor_factory", "context", "server_side_binding", "prepare_threshold"):
            params.pop(unused, None)
        params.setdefault("connect_timeout", 2)  # requests wait on this lock while it connects
        try:
            listener = psycopg.connect(**params, autocommit=True)
            listener.execute(f"LISTEN {CHANNEL}")
            announcing = listener.execute(_TRIGGERS_ENABLED).fetchone()[0]
        except psycopg.Error as exc:
            logger.warning("API token cache off: cannot listen for token changes (%s)", exc.__class__.__name__)
            self._retry_at = time.monotonic() + LISTEN_RETRY_S
            return False
        if announcing != len(TRIGGERS):
            # dropped or disabled (a restore without triggers, a conversion that refused them): no change
            # would be announced, so nothing may be cached
            logger.warning("API token cache off: the token table's change triggers are missing or disabled")
            listener.close()
            self._retry_at = time.monotonic() + LISTEN_RETRY_S
            return False
        self._listener = listener
        self._goodbye = False
        listener.add_notice_handler(self._notice_heard)
        self._poll = select.poll()
        self._poll.register(listener.pgconn.socket, select.POLLIN)
        self._empty()
        return True

    def _notice_heard(self, diagnostic) -> None:
        self._goodbye = True

    def _drop_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except psycopg.Error:
                pass
        self._listener = None
        self._retry_at = time.monotonic() + LISTEN_RETRY_S
        self._empty()

    def _empty(self) -> None:
        self._tokens.clear()
        self._generation += 1


token_cache = TokenCache()
