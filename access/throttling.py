"""Per-token rate limits: each client app gets its own budget of requests per minute, counted in
the shared cache (Redis), so every server process enforces the same limit.

The count is DRF's sliding window (SimpleRateThrottle: a request is allowed while fewer than the
rate were allowed in the last minute, and only allowed requests count), kept as a sorted set of
timestamps that one Lua script trims, counts and appends to, atomic across processes, where
SimpleRateThrottle reads and rewrites the whole pickled list of timestamps (two round trips, a list
as long as the rate, and concurrent requests overwriting each other's).

A process does not ask Redis on every request: it records a small lease of slots at once (a tenth
of a second's budget: 10 at the default 6,000/min, one for any rate under 1,200/min) and allows
requests from it locally for up to a second; a new lease gives back the slots the last one left
unused. The count is never under what was allowed, so no token gets more than its rate; it can be
refused early by at most the slots the processes hold unused at that moment (each fewer than one
lease: under 0.5% of the rate at the default with three workers)."""

import logging
import threading
import time
import uuid

from django.conf import settings
from django.core.cache import cache
from redis import RedisError
from redis.commands.core import Script
from rest_framework.throttling import SimpleRateThrottle

from access.authentication import ApiClient

logger = logging.getLogger(__name__)

# KEYS[1]: the token's log; ARGV: now, window (s), limit, number of members to give back, then
# those members, then the members asked for. Gives back, trims, records as many of the asked-for
# members as fit under the limit and returns {recorded, oldest timestamp in the window}.
_SLIDING_WINDOW_LEASE = """
local now, window, limit, back = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if back > 0 then redis.call('ZREM', KEYS[1], unpack(ARGV, 5, 4 + back)) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local asked = #ARGV - 4 - back
local granted = math.min(asked, limit - redis.call('ZCARD', KEYS[1]))
if granted > 0 then
  local entries = {}
  for i = 1, granted do
    entries[2 * i - 1] = ARGV[1]
    entries[2 * i] = ARGV[4 + back + i]
  end
  redis.call('ZADD', KEYS[1], unpack(entries))
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {granted, '0'}
end
return {0, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or ARGV[1]}
"""
_script = Script(None, _SLIDING_WINDOW_LEASE.encode())  # bytes: no client needed to encode it

LEASE_SECONDS = 1.0
LEASE_SHARE = 0.1  # of a second's budget
LEASE_MAX = 50


def lease_size(num_requests: int, duration: float) -> int:
    return max(1, min(LEASE_MAX, int(num_requests / duration * LEASE_SHARE)))


class LeaseBook:
    """This process's unused leased slots per throttle key: member names recorded in Redis, and when
    they stop being usable."""

    def __init__(self):
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[list[str], float]] = {}

    def take(self, key: str) -> bool:
        """One slot of a live lease, if there is one."""
        with self._lock:
            lease = self._leases.get(key)
            if lease is not None and lease[0] and lease[1] > time.monotonic():
                lease[0].pop()
                return True
            return False

    def release(self, key: str) -> list[str]:
        """The unused slots of the key's lease, forgotten here, to give back with the next one."""
        with self._lock:
            lease = self._leases.pop(key, None)
        return lease[0] if lease is not None else []

    def add(self, key: str, members: list[str]) -> None:
        with self._lock:
            lease = self._leases.get(key)
            if lease is not None and lease[1] > time.monotonic():
                lease[0].extend(members)
            else:
                self._leases[key] = (members, time.monotonic() + LEASE_SECONDS)

    def forget(self) -> None:
        with self._lock:
            self._leases.clear()


leases = LeaseBook()


_CLIENTS: dict[int, object] = {}


def _client_of(cache_client, key):
    """One Redis client per connection pool of the cache (django.core.cache.backends.redis.RedisCacheClient),
    kept: its get_client makes a new client on every call, and redis-py fills ~170 response callbacks each
    time (~0.3 ms of a request: cProfile of bench/api_load.py's requests), where a client is a thread-safe
    view of its pool."""
    pool = cache_client._get_connection_pool(True)
    client = _CLIENTS.get(id(pool))
    if client is None or client.connection_pool is not pool:
        client = _CLIENTS[id(pool)] = cache_client.get_client(key, write=True)
    return client


def slots_record(*, key: str, now: float, duration: float, num_requests: int, wanted: int,
                 give_back: list[str]) -> tuple[list[str], float]:
    """Record up to `wanted` new slots in the key's window (after giving back `give_back`): the recorded
    members and the oldest timestamp in the window (for Retry-After when none fit). RedisError passes."""
    batch = uuid.uuid4().hex
    members = [f"{batch}:{i}" for i in range(wanted)]
    redis = _client_of(cache._cache, key)
    granted, oldest = _script(keys=[key], args=[now, duration, num_requests, len(give_back), *give_back, *members],
                              client=redis)
    return members[:int(granted)], float(oldest)


class TokenRateThrottle(SimpleRateThrottle):
    scope = "token"

    def get_rate(self):
        # the rate depends on the token, known only in allow_request
        return f"{settings.API_THROTTLE_PER_MINUTE}/min"

    def get_cache_key(self, request, view):
        client = request.user
        if not isinstance(client, ApiClient):
            return None  # unauthenticated requests are refused before they cost anything
        return f"throttle:token:{client.token.prefix}"

    def allow_request(self, request, view):
        client = request.user
        if isinstance(client, ApiClient) and client.token.requests_per_minute:
            self.rate = f"{client.token.requests_per_minute}/min"
            self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        key = cache.make_and_validate_key(self.key)
        if leases.take(key):
            return True
        self.now = self.timer()
        give_back = leases.release(key)
        try:
            recorded, self.oldest = slots_record(
                key=key, now=self.now, duration=self.duration, num_requests=self.num_requests,
                wanted=lease_size(self.num_requests, self.duration), give_back=give_back,
            )
        except RedisError as exc:
            # Redis away: serve unthrottled rather than refuse every request (README "Reliability")
            logger.warning("rate limit not enforced: cache unavailable (%s)", exc.__class__.__name__)
            return True
        if not recorded:
            return False
        leases.add(key, recorded[1:])  # the first slot is this request's
        return True

    def wait(self):
        # as SimpleRateThrottle.wait with the window full: until the oldest request leaves it
        return max(0.0, self.duration - (self.now - self.oldest))
