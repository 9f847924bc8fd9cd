"""Per-token rate limits: each client app gets its own budget of requests per minute, counted in
the shared cache (Redis), so every server process enforces the same limit."""

import logging

from django.conf import settings
from redis import RedisError
from rest_framework.throttling import SimpleRateThrottle

from access.authentication import ApiClient

logger = logging.getLogger(__name__)


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
        try:
            return super().allow_request(request, view)
        except RedisError as exc:
            # Redis away: serve unthrottled rather than refuse every request (README "Reliability")
            logger.warning("rate limit not enforced: cache unavailable (%s)", exc.__class__.__name__)
            return True
