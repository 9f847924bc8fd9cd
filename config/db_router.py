"""Read replicas: which database a query goes to (README "Scale-out").

The primary ("default") takes every write and every read outside a replica-read scope: the admin,
workers, commands, and every API endpoint that writes. The read-only API endpoints (profile, similar
customers, lookalikes, recommendations, segment members, category demand) run their handler under
`replica_reads`, which picks one replica for the request, or the primary when none may answer. A
replica may answer only when
1. it is reachable, is still a standby, and lags at most DATABASE_REPLICA_MAX_LAG_S;
2. it has replayed every erasure (and profiling restriction): each records the primary's WAL position
   once it committed, and while one is in flight nothing is read from a replica at all;
3. it has replayed the client's own last write (read-your-writes): ReplicaWritesMiddleware records
   the primary's WAL position after a request of an API token that wrote.
The marks live in the broker's Redis, which every web process and worker sees, and are read on every
routed request; a Redis that does not answer sends reads to the primary. A replica's replay position
only moves forward, so a cached one (DATABASE_REPLICA_CHECK_MS) errs towards the primary. Without
DATABASE_REPLICA_URLS none of this runs. Migrations run on the primary only.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

logger = logging.getLogger(__name__)

# the replica alias chosen for the current replica-read scope; None: the primary
_read_alias: ContextVar[str | None] = ContextVar("portrait_read_alias", default=None)
# set by ReplicaWritesMiddleware for one request: "wrote" when the router routed a write, "read_only"
# when a replica_reads handler answered it
_writes: ContextVar[dict | None] = ContextVar("portrait_request_writes", default=None)

# WAL positions mean something only within one cluster: the keys carry the primary's system identifier
# (a physical replica shares it), so clusters sharing one Redis never mix their marks
ERASURE_LSN_KEY = "portrait:replicas:{cluster}:erasure-lsn"
ERASURES_IN_FLIGHT_KEY = "portrait:replicas:{cluster}:erasures-in-flight"
CLIENT_WRITE_KEY = "portrait:replicas:{cluster}:write-lsn:{client}"
# an erasure that crashed between its start and its mark stops replica reads this long at most;
# longer than any erasure, and than DATABASE_REPLICA_MAX_LAG_S, so a replica in use afterwards has it
ERASURE_IN_FLIGHT_S = 600
# a replica that did not answer is not asked again for this long (a connect timeout per request
# would stall every read)
UNREACHABLE_RETRY_S = 5.0
# a replica whose cached position is behind a mark is looked at again, at most this often
RECHECK_S = 0.05

# keeps the larger of the stored and the given position (erasures and writes commit out of order)
_MAX_SET = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class ReplicaRouter:
    def db_for_read(self, model, **hints):
        return _read_alias.get() or DEFAULT_DB_ALIAS

    def db_for_write(self, model, **hints):
        writes = _writes.get()
        if writes is not None:
            writes["wrote"] = True
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # every alias holds the same data

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS


def replicas_configured() -> bool:
    return bool(getattr(settings, "DATABASE_REPLICAS", ()))


# --- Where a replica stands ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaState:
    alias: str
    reachable: bool
    standby: bool = False
    replay_lsn: int | None = None  # bytes of WAL replayed (pg_last_wal_replay_lsn() - '0/0')
    lag_s: float | None = None  # 0 when replayed up to the primary's position, else since the last replayed commit
    replay_paused: bool = False
    error: str = ""
    measured_at: float = 0.0  # time.monotonic()

    @property
    def usable(self) -> bool:
        return (self.reachable and self.standby and self.lag_s is not None
                and self.lag_s <= settings.DATABASE_REPLICA_MAX_LAG_S)

    @property
    def skipped_because(self) -> str:
        if not self.reachable:
            return "unreachable"
        if not self.standby:
            return "not a standby"
        if not self.usable:
            return "lagging"
        return ""


_states: dict[str, ReplicaState] = {}
_states_lock = threading.Lock()


def primary_wal_lsn() -> int:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
        return int(cursor.fetchone()[0])


def replica_measure(alias: str, *, primary_lsn: int | None = None) -> ReplicaState:
    """Look at one replica now: its replay position against the primary's WAL position, and how far
    behind it is in seconds. Behind the primary but streaming, with everything it received replayed
    (the WAL is on its way): the time since it last heard from the primary, about 0 while WAL
    flows. Otherwise (replay paused or slow, or no WAL receiver): the time since its last replayed
    commit, which overstates an idle primary's gap but never understates a stuck replica's."""
    if primary_lsn is None:
        primary_lsn = primary_wal_lsn()
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,"
                " (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint,"
                " extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8,"
                " pg_is_in_recovery() AND pg_is_wal_replay_paused(),"
                " (SELECT status = 'streaming' FROM pg_stat_wal_receiver),"
                " (SELECT extract(epoch FROM clock_timestamp() - last_msg_receipt_time)::float8 FROM pg_stat_wal_receiver)"
            )
            standby, replay_lsn, receive_lsn, behind_s, paused, streaming, silent_s = cursor.fetchone()
    except DatabaseError as error:
        try:
            connections[alias].close()
        except DatabaseError:
            pass
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else error.__class__.__name__
        state = ReplicaState(alias=alias, reachable=False, error=message, measured_at=time.monotonic())
    else:
        if not standby or replay_lsn is None:
            lag = None
        elif replay_lsn >= primary_lsn:
            lag = 0.0
        elif streaming and not paused and receive_lsn is not None and receive_lsn <= replay_lsn and silent_s is not None:
            lag = max(0.0, silent_s)
        else:
            lag = max(0.0, behind_s) if behind_s is not None else math.inf
        state = ReplicaState(alias=alias, reachable=True, standby=bool(standby), replay_lsn=replay_lsn, lag_s=lag,
                             replay_paused=bool(paused), measured_at=time.monotonic())
    with _states_lock:
        _states[alias] = state
    return state


def replica_states(*, max_age_s: float | None = None) -> list[ReplicaState]:
    """Every configured replica's state, measured again when older than DATABASE_REPLICA_CHECK_MS
    (an unreachable one after UNREACHABLE_RETRY_S)."""
    if max_age_s is None:
        max_age_s = settings.DATABASE_REPLICA_CHECK_MS / 1000
    now, primary_lsn, out = time.monotonic(), None, []
    for alias in settings.DATABASE_REPLICAS:
        with _states_lock:
            state = _states.get(alias)
        age_allowed = max_age_s if state is None or state.reachable else max(max_age_s, UNREACHABLE_RETRY_S)
        if state is None or now - state.measured_at > age_allowed:
            if primary_lsn is None:
                primary_lsn = primary_wal_lsn()
            state = replica_measure(alias, primary_lsn=primary_lsn)
        out.append(state)
    return out


def replica_states_forget() -> None:
    with _states_lock:
        _states.clear()


# --- The marks a replica must have replayed -----------------------------------------------------


def _redis():
    from config.broker_redis import broker_redis

    return broker_redis()


_cluster_ids: dict[tuple, str] = {}


def mark_key(template: str, *, client: str = "") -> str:
    """A Redis key of the marks, in the primary cluster's namespace (asked once per process and server)."""
    settings_dict = connections[DEFAULT_DB_ALIAS].settings_dict
    server = (settings_dict.get("HOST"), settings_dict.get("PORT"), settings_dict.get("NAME"))
    if server not in _cluster_ids:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT system_identifier FROM pg_control_system()")
            _cluster_ids[server] = f"{cursor.fetchone()[0]}:{server[2]}"
    return template.format(cluster=_cluster_ids[server], client=client)


def read_barrier(*, client: str | None) -> int | None:
    """The WAL position a replica must have replayed to answer `client`: the last erasure's and the
    client's last write's, whichever is later. None while an erasure is in flight (the primary
    answers). Raises redis.RedisError when Redis does not answer."""
    pipe = _redis().pipeline(transaction=False)
    pipe.get(mark_key(ERASURE_LSN_KEY))
    pipe.zcount(mark_key(ERASURES_IN_FLIGHT_KEY), time.time(), "+inf")
    pipe.get(mark_key(CLIENT_WRITE_KEY, client=client) if client else mark_key(ERASURE_LSN_KEY))
    erasure_lsn, in_flight, client_lsn = pipe.execute()
    if in_flight:
        return None
    return max(int(erasure_lsn or 0), int(client_lsn or 0))


def replica_choose(*, client: str | None = None) -> tuple[str | None, str]:
    """The replica that may answer a read-only request of `client` (an API token's "token:<id>"),
    or None for the primary; with the reason when it is the primary."""
    if not replicas_configured():
        return None, "no replica configured"
    import redis

    try:
        barrier = read_barrier(client=client)
    except (redis.RedisError, OSError):
        logger.warning("replica marks unavailable in Redis: reading from the primary")
        return None, "marks unavailable"
    if barrier is None:
        return None, "erasure in flight"
    usable = [state for state in replica_states() if state.usable]
    if not usable:
        return None, "no usable replica"
    random.shuffle(usable)
    for state in usable:
        if state.replay_lsn >= barrier:
            return state.alias, ""
    # the cached positions are lower bounds: look again at the replicas that may have caught up since
    now, primary_lsn = time.monotonic(), None
    for state in usable:
        if now - state.measured_at > RECHECK_S:
            primary_lsn = primary_lsn if primary_lsn is not None else primary_wal_lsn()
            fresh = replica_measure(state.alias, primary_lsn=primary_lsn)
            if fresh.usable and fresh.replay_lsn >= barrier:
                return fresh.alias, ""
    return None, "replicas behind the erasure or the client's write"


def _position_record(key: str, *, ttl_s: int = 0) -> None:
    _redis().eval(_MAX_SET, 1, key, primary_wal_lsn(), ttl_s)


def client_write_ttl_s() -> int:
    # past this, a replica lagging at most DATABASE_REPLICA_MAX_LAG_S has the write anyway
    return max(60, int(10 * settings.DATABASE_REPLICA_MAX_LAG_S))


def client_write_record(*, client: str) -> None:
    """After a request of `client` wrote: its reads wait for a replica that has replayed this far."""
    _position_record(mark_key(CLIENT_WRITE_KEY, client=client), ttl_s=client_write_ttl_s())


@contextmanager
def replica_reads_fenced():
    """Around a write that replicas must have replayed before they answer any read again (an
    erasure, a profiling restriction): while it runs no read goes to a replica; once it has
    committed, the primary's WAL position is recorded and a replica answers only from there on.
    A no-op without replicas. Nested in an outer transaction, the mark follows that commit."""
    if not replicas_configured():
        yield
        return
    member, in_flight = uuid.uuid4().hex, mark_key(ERASURES_IN_FLIGHT_KEY)
    client = _redis()
    # a Redis that does not answer stops the erasure before anything is deleted (it is retried)
    client.zadd(in_flight, {member: time.time() + ERASURE_IN_FLIGHT_S})
    client.zremrangebyscore(in_flight, "-inf", time.time())

    def committed():
        _position_record(mark_key(ERASURE_LSN_KEY))
        client.zrem(in_flight, member)

    try:
        yield
    except BaseException:
        try:
            client.zrem(in_flight, member)
        except Exception:  # the mark expires by itself; the write's own error is the one to raise
            logger.exception("could not clear an in-flight erasure mark")
        raise
    transaction.on_commit(committed)


# --- The request side ---------------------------------------------------------------------------


def request_client(request) -> str | None:
    """Who reads its own writes: the API token behind the request (DRF puts it on the request)."""
    token = getattr(request, "auth", None)
    pk = getattr(token, "pk", None)
    return f"token:{pk}" if pk is not None else None


def replica_reads(handler):
    """A read-only API handler: its reads go to the replica `replica_choose` picks for the request."""

    @wraps(handler)
    def wrapped(view, request, *args, **kwargs):
        alias, _ = replica_choose(client=request_client(request)) if replicas_configured() else (None, "")
        writes = _writes.get()
        if writes is not None:
            writes["read_only"] = True  # a POST that only reads (lookalikes) is no write
        scope = _read_alias.set(alias)
        try:
            return handler(view, request, *args, **kwargs)
        finally:
            _read_alias.reset(scope)

    return wrapped


def read_alias() -> str:
    """The alias reads go to just now (for raw SQL: `connections[read_alias()]`)."""
    return _read_alias.get() or DEFAULT_DB_ALIAS


class ReplicaWritesMiddleware:
    """With replicas: after a request of an API token that wrote anything, record the primary's WAL
    position for that token, so its next reads wait for a replica that has it (or use the primary).
    A request wrote when the router routed a write, or when it was an unsafe method (POST, PUT, PATCH,
    DELETE) that succeeded outside a replica_reads handler: bulk writes (COPY, raw SQL) bypass the router."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not replicas_configured():
            return self.get_response(request)
        writes: dict = {}
        scope = _writes.set(writes)
        try:
            response = self.get_response(request)
        finally:
            _writes.reset(scope)
        client = request_client(request)
        unsafe = request.method not in ("GET", "HEAD", "OPTIONS", "TRACE") and response.status_code < 400
        if client and (writes.get("wrote") or (unsafe and not writes.get("read_only"))):
            try:
                client_write_record(client=client)
            except Exception:
                logger.exception("could not record the write position of %s: its next reads may miss its writes", client)
        return response
