"""The per-token throttle leases slots from Redis instead of asking on every request: how many it
records, what it gives back, and that processes together never allow more than the token's rate."""

from types import SimpleNamespace

import pytest
from django.core.cache import cache

from access import throttling
from access.authentication import ApiClient
from access.services import api_token_create
from access.throttling import LeaseBook, TokenRateThrottle, lease_size

pytestmark = pytest.mark.django_db


def _request_of(rate_per_minute: int):
    token, _ = api_token_create(name="app", scopes=["profiles:read"], requests_per_minute=rate_per_minute)
    return SimpleNamespace(user=ApiClient(token)), token


def _recorded(token) -> int:
    redis = cache._cache.get_client(write=False)
    return redis.zcard(cache.make_and_validate_key(f"throttle:token:{token.prefix}"))


def test_a_lease_is_a_tenth_of_a_seconds_budget_and_one_slot_below_1200_a_minute():
    assert lease_size(6_000, 60) == 10
    assert lease_size(1_200, 60) == 2
    assert lease_size(1_199, 60) == 1
    assert lease_size(3, 60) == 1
    assert lease_size(10_000_000, 60) == throttling.LEASE_MAX


def test_a_process_records_a_lease_at_a_time_not_a_request_at_a_time():
    request, token = _request_of(6_000)

    allowed = [TokenRateThrottle().allow_request(request, None) for _ in range(25)]

    assert all(allowed)
    assert _recorded(token) == 30  # three leases of 10; five slots still held by this process


def test_an_expired_lease_s_unused_slots_are_removed_from_the_window(monkeypatch):
    request, token = _request_of(6_000)
    for _ in range(3):
        assert TokenRateThrottle().allow_request(request, None)
    clock = [0.0]
    real = throttling.time.monotonic
    monkeypatch.setattr(throttling.time, "monotonic", lambda: real() + clock[0])
    clock[0] = throttling.LEASE_SECONDS + 1  # the lease of 10 expires with 7 unused

    assert TokenRateThrottle().allow_request(request, None)

    assert _recorded(token) == 3 + 10  # the 7 given back, a new lease of 10 recorded


def test_processes_together_never_allow_more_than_the_rate_and_refuse_with_retry_after(monkeypatch):
    request, token = _request_of(1_200)  # leases of 2
    processes = [LeaseBook(), LeaseBook(), LeaseBook()]
    allowed, refused = 0, None
    for call in range(1_300):
        monkeypatch.setattr(throttling, "leases", processes[call % 3])
        throttle = TokenRateThrottle()
        if throttle.allow_request(request, None):
            allowed += 1
        else:
            refused = throttle

    assert _recorded(token) == 1_200
    assert 1_200 - 3 <= allowed <= 1_200  # at most one unused slot per process when the window filled
    assert refused is not None and 0 < refused.wait() <= 60


def test_a_token_under_1200_a_minute_is_counted_one_request_at_a_time():
    request, token = _request_of(3)

    answers = [TokenRateThrottle().allow_request(request, None) for _ in range(4)]

    assert answers == [True, True, True, False]
    assert _recorded(token) == 3
