"""One Redis client on the broker's URL, for the small coordination keys beside the queues (pending
refresh marks, queued-refresh marks)."""

import functools


@functools.cache
def broker_redis():
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=2)
