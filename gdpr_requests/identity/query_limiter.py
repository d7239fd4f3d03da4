"""The shared rate limiter of Mixpanel's Query API: per Mixpanel project, at most MIXPANEL_QUERY_LIMIT
queries in any rolling MIXPANEL_QUERY_WINDOW_SECONDS and MIXPANEL_QUERY_CONCURRENCY at once, held across
every worker process and host (docs/identity.md §1.5: "60 queries per hour and a maximum of 5 concurrent
queries", scoped per project; every page is a query).

The design is the GDPR limiter's (gdpr_requests/mixpanel/ratelimit.py) with a window instead of an interval:
``acquire(key)`` never sleeps. It returns ``(token, 0.0)`` when the caller may query now, or ``(None, seconds)``
to look again later, so a Celery task reschedules instead of blocking a worker. A taken slot counts against
concurrency until ``release(key, token)`` or, should the caller die, ``hold_seconds()`` later; against the
window it counts from when it was taken and, once released, from when its query ended. Mixpanel counts queries
as they arrive, a little after the slot was taken: counted from the taking, a query that waited longer before
being sent than a later one let 61 arrive within one hour (the benchmark saw it). Counted from the end, the
61st can start only a full window after the oldest was answered, so after it arrived too. A slot taken but never used for a query (nothing left to ask) is given
back with ``release(..., used=False)`` and stops counting against the window too.

Two stores, chosen by settings.REDIS_URL:
- Redis: two sorted sets per key (the window's entries, the holds' ends) changed by Lua scripts, atomic and
  on Redis's own clock;
- the database otherwise: a QueryBudgetUse row per query; a taker first UPDATEs the key's QueryBudgetLock row,
  which serialises takers of one key (a row lock on PostgreSQL, the write lock on SQLite) before it counts.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

logger = logging.getLogger(__name__)

REDIS_PREFIX = "dsr:mixpanel-query:"
REDIS_SOCKET_TIMEOUT_SECONDS = 2.0
HOLD_SLACK_SECONDS = 10.0
# A full concurrency budget frees when some query ends, which nobody can predict: look again this soon.
BUSY_RETRY_SECONDS = 1.0

# KEYS[1] window starts (member token, score ms), KEYS[2] holds (member token, score = hold end ms).
# ARGV: token, limit, window ms, concurrency, hold ms, busy retry ms. Returns 0 (taken) or the ms to wait.
_ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = tonumber(oldest[2]) + window - now
  if wait < 1 then wait = 1 end
  return wait
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return tonumber(ARGV[6])
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], window + tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[2], window + tonumber(ARGV[5]))
return 0
"""


@dataclass(frozen=True)
class Budget:
    """How many queries a key may start per rolling window, and how many may run at once."""

    limit: int
    window_seconds: float
    concurrency: int


def budget() -> Budget:
    """The Query API's budget from settings (docs/identity.md §1.5)."""
    return Budget(limit=limit(), window_seconds=window_seconds(), concurrency=concurrency())


# KEYS as above; ARGV[1] the token, ARGV[2] 1 when the query was sent. A sent query's window entry moves to
# now (its end) if it is still there; an unsent one leaves the window, unless it was released as sent before.
_RELEASE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
elseif held == 1 then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""


class QueryLimiterUnavailable(Exception):
    """The store (Redis) did not answer: treat it as "no slot now" and try again later."""


def key_for(*, mixpanel_project_id: str, residency: str) -> str:
    """The limiter key of one Mixpanel project: Mixpanel scopes the budget per project (§1.5), so a new
    credential, or a second MixpanelProject row naming the same project, shares it."""
    return f"{(residency or 'us').lower()}:{mixpanel_project_id.strip()}"


def limit() -> int:
    return max(1, int(settings.MIXPANEL_QUERY_LIMIT))


def window_seconds() -> float:
    return max(0.001, float(settings.MIXPANEL_QUERY_WINDOW_SECONDS))


def concurrency() -> int:
    return max(1, int(settings.MIXPANEL_QUERY_CONCURRENCY))


def hold_seconds() -> float:
    """How long a slot counts as running if its caller never releases it: a connect and a read timeout per
    page are the most a query can take, plus slack."""
    return 2 * float(settings.MIXPANEL_HTTP_TIMEOUT_SECONDS) + HOLD_SLACK_SECONDS


def acquire(key: str, *, within: Budget | None = None) -> tuple[str | None, float]:
    """Take a slot for ``key``: ``(token, 0.0)``, or ``(None, seconds to wait)`` when the window or the
    concurrency budget is full. ``within`` defaults to the settings' budget (the sandbox passes its own).
    Raises QueryLimiterUnavailable when Redis does not answer."""
    token = uuid.uuid4().hex
    within = within or budget()
    wait = _acquire_redis(key, token, within) if settings.REDIS_URL else _acquire_db(key, token, within)
    return (token, 0.0) if wait <= 0 else (None, wait)


def release(key: str, token: str, *, used: bool = True) -> None:
    """The query that took ``token`` is over (``used``), or was never sent (``used=False``: the slot stops
    counting against the window too). Idempotent; never raises: a hold runs out on its own."""
    try:
        if settings.REDIS_URL:
            _redis().eval(
                _RELEASE_SCRIPT, 2, REDIS_PREFIX + key + ":window", REDIS_PREFIX + key + ":held", token, int(used)
            )
        else:
            from gdpr_requests.models import QueryBudgetUse

            uses = QueryBudgetUse.objects.filter(key=key, token=token)
            if used:
                now = timezone.now()
                uses.filter(released_at__isnull=True).update(released_at=now, counts_from=now)
            else:  # a slot released as used before (a redelivered task) keeps counting
                uses.filter(released_at__isnull=True).delete()
    except Exception as exc:  # a store hiccup: the hold frees when it runs out
        logger.warning("mixpanel query limiter: could not release a slot (%s)", type(exc).__name__)


def is_held(key: str, token: str) -> bool:
    """Whether ``token``'s slot is still taken (not released, its hold not run out)."""
    if settings.REDIS_URL:
        import time

        score = _redis().zscore(REDIS_PREFIX + key + ":held", token)
        return score is not None and score > time.time() * 1000
    from gdpr_requests.models import QueryBudgetUse

    return QueryBudgetUse.objects.filter(
        key=key, token=token, released_at__isnull=True, held_until__gt=timezone.now()
    ).exists()


def usage(key: str, *, within: Budget | None = None) -> tuple[int, int]:
    """(queries in the current window, queries running now) for ``key``, for metrics and tests."""
    window_s = (within or budget()).window_seconds
    if settings.REDIS_URL:
        import time

        now_ms = time.time() * 1000
        client = _redis()
        window = client.zcount(REDIS_PREFIX + key + ":window", now_ms - window_s * 1000, "+inf")
        running = client.zcount(REDIS_PREFIX + key + ":held", now_ms, "+inf")
        return int(window), int(running)
    from gdpr_requests.models import QueryBudgetUse

    now = timezone.now()
    uses = QueryBudgetUse.objects.filter(key=key)
    in_window = uses.filter(counts_from__gt=now - timedelta(seconds=window_s)).count()
    running = uses.filter(released_at__isnull=True, held_until__gt=now).count()
    return in_window, running


# --- database store -----------------------------------------------------------------------------------


def _acquire_db(key: str, token: str, within: Budget) -> float:
    from gdpr_requests.models import QueryBudgetLock, QueryBudgetUse

    window = timedelta(seconds=within.window_seconds)
    for _attempt in range(3):
        with transaction.atomic():
            # The UPDATE first: it is what makes a second taker of this key wait for our commit.
            if not QueryBudgetLock.objects.filter(key=key).update(takes=F("takes") + 1):
                try:
                    with transaction.atomic():
                        QueryBudgetLock.objects.create(key=key, takes=1)
                except IntegrityError:  # another taker created it first: take its lock
                    continue
            now = timezone.now()
            uses = QueryBudgetUse.objects.filter(key=key)
            # Rows nobody counts any more: out of the window and no longer held.
            uses.filter(counts_from__lte=now - window).filter(
                Q(released_at__isnull=False) | Q(held_until__lte=now)
            ).delete()
            starts = list(
                uses.filter(counts_from__gt=now - window)
                .order_by("counts_from")
                .values_list("counts_from", flat=True)[: within.limit]
            )
            if len(starts) >= within.limit:
                QueryBudgetLock.objects.filter(key=key).update(waits=F("waits") + 1)
                return max(0.001, (starts[0] + window - now).total_seconds())
            if uses.filter(released_at__isnull=True, held_until__gt=now).count() >= within.concurrency:
                QueryBudgetLock.objects.filter(key=key).update(waits=F("waits") + 1)
                return BUSY_RETRY_SECONDS
            QueryBudgetUse.objects.create(
                key=key, token=token, counts_from=now, held_until=now + timedelta(seconds=hold_seconds())
            )
            return 0.0
    return BUSY_RETRY_SECONDS


# --- Redis store --------------------------------------------------------------------------------------

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _redis() -> Any:
    import redis

    url = settings.REDIS_URL
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
                health_check_interval=30,
            )
            _clients[url] = client
    return client


def _acquire_redis(key: str, token: str, within: Budget) -> float:
    import redis

    def ms(seconds: float) -> int:
        return max(1, round(seconds * 1000))

    try:
        result = _redis().eval(
            _ACQUIRE_SCRIPT,
            2,
            REDIS_PREFIX + key + ":window",
            REDIS_PREFIX + key + ":held",
            token,
            within.limit,
            ms(within.window_seconds),
            within.concurrency,
            ms(hold_seconds()),
            ms(BUSY_RETRY_SECONDS),
        )
    except redis.RedisError as exc:
        logger.warning("mixpanel query limiter: Redis unavailable (%s)", type(exc).__name__)
        raise QueryLimiterUnavailable("the query limiter's Redis did not answer") from None
    return int(result) / 1000.0
