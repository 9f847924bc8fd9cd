"""Writes for API tokens. The clear token exists only in the return value of api_token_create."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction
from django.utils import timezone

from django.db.models import Sum

from access.models import ApiToken, PrivacyBudgetSpend, Scope
from access.token_cache import token_cache

TOKEN_PREFIX = "pt_"


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def api_token_create(
    *, name: str, scopes: list[str], requests_per_minute: int | None = None, lifetime: timedelta | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its clear text. It expires after `lifetime` (default API_TOKEN_LIFETIME_DAYS)."""
    unknown = set(scopes) - set(Scope.values)
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    lifetime = timedelta(days=settings.API_TOKEN_LIFETIME_DAYS) if lifetime is None else lifetime
    if lifetime <= timedelta(0):
        raise ValueError("a token's lifetime must be positive")
    prefix = secrets.token_hex(6)
    raw = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        name=name, prefix=prefix, secret_hash=token_hash(raw), scopes=sorted(set(scopes)),
        requests_per_minute=requests_per_minute, expires_at=timezone.now() + lifetime,
    )
    return token, raw


def api_token_rate_set(*, token: ApiToken, requests_per_minute: int | None) -> None:
    ApiToken.objects.filter(pk=token.pk).update(requests_per_minute=requests_per_minute)
    transaction.on_commit(token_cache.forget)  # other processes: the table's trigger notifies them


def api_token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    transaction.on_commit(token_cache.forget)


def api_token_authenticate(*, raw: str) -> ApiToken | None:
    """The active (unrevoked, unexpired) token matching `raw`, or None. Constant-time comparison of hashes.
    From this process's cache when it may answer (access.token_cache), else from the table."""
    if not raw.startswith(TOKEN_PREFIX) or raw.count("_") < 2:
        return None
    prefix = raw[len(TOKEN_PREFIX):].split("_", 1)[0]
    now = timezone.now()
    generation = token_cache.generation()
    token = None if generation is None else token_cache.get(prefix, generation)
    if token is None:
        # a cached token must come from the primary: a replica may not have replayed a change announced
        token = _active_token_by_prefix(prefix, now, DEFAULT_DB_ALIAS if generation is not None else None)
        if token is None:
            return None
        if generation is not None:
            token_cache.put(prefix, token, generation)
    elif token.expires_at <= now:
        return None
    if not secrets.compare_digest(token.secret_hash, token_hash(raw)):
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


_TOKEN_FIELDS = [f.attname for f in ApiToken._meta.concrete_fields]
_TOKEN_BY_PREFIX = (
    f"SELECT {', '.join(_TOKEN_FIELDS)} FROM {ApiToken._meta.db_table}"
    " WHERE prefix = %s AND revoked_at IS NULL AND expires_at > %s LIMIT 1"
)


def _active_token_by_prefix(prefix: str, now, alias: str | None) -> ApiToken | None:
    """The unrevoked, unexpired token with this prefix: one statement written out instead of compiled
    by the ORM each time (that compilation cost more than the query). `alias` None: where the router
    sends reads of tokens."""
    alias = alias or router.db_for_read(ApiToken)
    with connections[alias].cursor() as cursor:
        cursor.execute(_TOKEN_BY_PREFIX, [prefix, now])
        row = cursor.fetchone()
    return None if row is None else ApiToken.from_db(alias, _TOKEN_FIELDS, row)


class PrivacyBudgetExhausted(Exception):
    pass


@transaction.atomic
def api_token_privacy_spend(*, token: ApiToken, epsilon: float) -> float:
    """Record `epsilon` against the token's privacy budget (DP_TOKEN_BUDGET over the last
    DP_BUDGET_WINDOW_DAYS) and return what is left; PrivacyBudgetExhausted, spending nothing, when
    it does not fit. Repeated releases compose: without a budget a client could average the noise away."""
    ApiToken.objects.select_for_update().filter(pk=token.pk).first()  # one spend at a time per token
    since = timezone.now() - timedelta(days=settings.DP_BUDGET_WINDOW_DAYS)
    spent = PrivacyBudgetSpend.objects.filter(token=token, spent_at__gte=since).aggregate(s=Sum("epsilon"))["s"] or 0.0
    remaining = settings.DP_TOKEN_BUDGET - spent
    if epsilon > remaining + 1e-9:
        raise PrivacyBudgetExhausted(f"epsilon {epsilon} exceeds the {max(remaining, 0.0):.6g} left to this token")
    PrivacyBudgetSpend.objects.create(token=token, epsilon=epsilon)
    return max(0.0, round(remaining - epsilon, 9))
