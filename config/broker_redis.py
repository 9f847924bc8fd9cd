"""One Redis client on the Celery broker's URL, for the small coordination keys beside the queues
(pending profile-refresh marks, queued segment-refresh marks). The URL is the Celery app's, read at
each call, so a process whose broker was pointed elsewhere (the tests' own database) marks there."""

import functools


def broker_redis():
    from celery import current_app

    return _client(current_app.conf.broker_url)


@functools.cache
def _client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
