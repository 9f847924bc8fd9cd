"""Per-token rate limits: each client app gets its own budget of requests per minute, counted in
the shared cache (Redis), so every server process enforces the same limit.

The count is DRF's sliding window (SimpleRateThrottle: a request is allowed while fewer than the
rate were allowed in the last minute, and only allowed requests count), kept as a sorted set of
timestamps that one Lua script trims, counts and appends to: one round trip per request and atomic
across processes, where SimpleRateThrottle reads and rewrites the whole pickled list of timestamps
(two round trips, a list as long as the rate, and concurrent requests overwriting each other's)."""

import logging
import uuid

from django.conf import settings
from django.core.cache import cache
from redis import RedisError
from redis.commands.core import Script
from rest_framework.throttling import SimpleRateThrottle

from access.authentication import ApiClient

logger = logging.getLogger(__name__)

# KEYS[1]: the token's log; ARGV: now, window (s), limit, a unique member.
# Returns {1, 0} when allowed (and recorded), {0, oldest timestamp in the window} when not.
_SLIDING_WINDOW = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {1, '0'}
end
return {0, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]}
"""
_script = Script(None, _SLIDING_WINDOW.encode())  # bytes: no client needed to encode it


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
        self.now = self.timer()
        key = cache.make_and_validate_key(self.key)
        try:
            # the Redis client of Django's cache (django.core.cache.backends.redis), where the counters live
            redis = _client_of(cache._cache, key)
            allowed, oldest = _script(keys=[key], args=[self.now, self.duration, self.num_requests, uuid.uuid4().hex],
                                      client=redis)
        except RedisError as exc:
            # Redis away: serve unthrottled rather than refuse every request (README "Reliability")
            logger.warning("rate limit not enforced: cache unavailable (%s)", exc.__class__.__name__)
            return True
        self.oldest = float(oldest)
        return bool(allowed)

    def wait(self):
        # as SimpleRateThrottle.wait with the window full: until the oldest request leaves it
        return max(0.0, self.duration - (self.now - self.oldest))
