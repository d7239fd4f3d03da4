"""The shared rate limiter of Mixpanel's Query API: per Mixpanel project, at most MIXPANEL_QUERY_LIMIT
queries in any rolling MIXPANEL_QUERY_WINDOW_SECONDS and MIXPANEL_QUERY_CONCURRENCY at once, held across
every worker process and host (docs/identity.md §1.5: "60 queries per hour and a maximum of 5 concurrent
queries", scoped per project; every page is a query).

The design is the GDPR limiter's (gdpr_requests/mixpanel/ratelimit.py) with a window instead of an interval:
``acquire(key)`` never sleeps. It returns ``(token, 0.0)`` when the caller may query now, or ``(None, seconds)``
to look again later, so a Celery task reschedules instead of blocking a worker. A taken slot counts against
concurrency until ``release(key, token)`` or, should the caller die, ``hold_seconds()`` later; against the
window it counts as of now while it is held (wherever it waited before being sent, it reaches Mixpanel before it
ends) and, once released, from when its query ended. Mixpanel counts queries as they arrive, a little after the
slot was taken: counted from the taking, a query that waited longer before being sent than a later one let 61
arrive within one hour (the benchmark saw it). Counted from the end, the 61st can start only a full window after
the oldest was answered, so after it arrived too. A slot taken but never used for a query (nothing left to ask)
is given back with ``release(..., used=False)`` and stops counting against the window too.

Every page is a query (§1.5), but the pages of one query run one after the other: ``next_page(key, token)`` ends
the page that held ``token`` and takes the next one's slot in one move, without a second concurrency slot. And
a page needs room in the window, which new queries would otherwise fill first under a backlog, so that the
first page (already asked and counted) would be asked again later for nothing: a caller that may need more
pages takes its slot with ``acquire(key, leave_room_to_page=True)``, which gives a slot only while the window
keeps one free query for each query running, this one included (never more than ``limit - 1``).

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
# ARGV: token, limit, window ms, concurrency, hold ms, busy retry ms, 1 to leave room to page. Returns 0 (taken)
# or the ms to wait: until enough of the window's oldest entries age out, or (a running query may end first and
# give its room back) the busy retry.
_ACQUIRE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for _, running in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  redis.call('ZADD', KEYS[1], 'XX', now, running)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local running = redis.call('ZCARD', KEYS[2])
local room = 0
if ARGV[7] == '1' then room = math.min(running + 1, limit - 1) end
if used + room >= limit then
  local entry = redis.call('ZRANGE', KEYS[1], used + room - limit, used + room - limit, 'WITHSCORES')
  local wait = tonumber(entry[2]) + window - now
  if wait < 1 then wait = 1 end
  if room > 0 and running > 0 and wait > tonumber(ARGV[6]) then wait = tonumber(ARGV[6]) end
  return wait
end
if running >= tonumber(ARGV[4]) then
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


# KEYS as above; ARGV: the page's token, the next page's token, limit, window ms, concurrency, hold ms, busy retry
# ms. The page ends now (its hold goes, its window entry moves to now); the next page takes a window entry and
# the hold, unless the window is full (or the page had lost its hold and the concurrency budget is full).
_NEXT_PAGE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
for _, running in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  redis.call('ZADD', KEYS[1], 'XX', now, running)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = tonumber(oldest[2]) + window - now
  if wait < 1 then wait = 1 end
  return wait
end
if held == 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return tonumber(ARGV[7])
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], window + tonumber(ARGV[6]))
redis.call('PEXPIRE', KEYS[2], window + tonumber(ARGV[6]))
return 0
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


def acquire(key: str, *, within: Budget | None = None, leave_room_to_page: bool = False) -> tuple[str | None, float]:
    """Take a slot for ``key``: ``(token, 0.0)``, or ``(None, seconds to wait)`` when the window or the
    concurrency budget is full. ``within`` defaults to the settings' budget (the sandbox passes its own).
    ``leave_room_to_page``: give the slot only if the window keeps room for one more page of every query running
    and of this one (see the module's docstring). Raises QueryLimiterUnavailable when Redis does not answer."""
    token = uuid.uuid4().hex
    within = within or budget()
    if settings.REDIS_URL:
        wait = _acquire_redis(key, token, within, leave_room_to_page)
    else:
        wait = _acquire_db(key, token, within, leave_room_to_page)
    return (token, 0.0) if wait <= 0 else (None, wait)


def next_page(key: str, token: str, *, within: Budget | None = None) -> tuple[str | None, float]:
    """The query holding ``token`` has its page's answer and needs the next page: end that page (as ``release``
    does) and take a slot for the next one in the same move, with the window's room but without a second
    concurrency slot (the pages run one after the other). ``(new token, 0.0)``, or ``(None, seconds to wait)``
    when the window is full (the page is released all the same). Raises QueryLimiterUnavailable when Redis does
    not answer."""
    new = uuid.uuid4().hex
    within = within or budget()
    wait = _next_page_redis(key, token, new, within) if settings.REDIS_URL else _next_page_db(key, token, new, within)
    return (new, 0.0) if wait <= 0 else (None, wait)


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


def _locked(key: str) -> bool:
    """Inside a transaction: take the key's lock row (creating it the first time); False when another taker
    created it first (try again)."""
    from gdpr_requests.models import QueryBudgetLock

    # The UPDATE first: it is what makes a second taker of this key wait for our commit.
    if QueryBudgetLock.objects.filter(key=key).update(takes=F("takes") + 1):
        return True
    try:
        with transaction.atomic():
            QueryBudgetLock.objects.create(key=key, takes=1)
    except IntegrityError:  # another taker created it first: take its lock
        return False
    return True


def _counted(key: str, within: Budget, now: Any) -> tuple[list[Any], int]:
    """(the window's entries, oldest first, at most ``limit``; the queries running), once the rows nobody counts
    any more (out of the window and no longer held) are gone."""
    from gdpr_requests.models import QueryBudgetUse

    window = timedelta(seconds=within.window_seconds)
    uses = QueryBudgetUse.objects.filter(key=key)
    uses.filter(released_at__isnull=True, held_until__gt=now).update(counts_from=now)  # running: counts as of now
    uses.filter(counts_from__lte=now - window).filter(Q(released_at__isnull=False) | Q(held_until__lte=now)).delete()
    starts = list(
        uses.filter(counts_from__gt=now - window)
        .order_by("counts_from")
        .values_list("counts_from", flat=True)[: within.limit]
    )
    return starts, uses.filter(released_at__isnull=True, held_until__gt=now).count()


def _wait_db(key: str, seconds: float) -> float:
    from gdpr_requests.models import QueryBudgetLock

    QueryBudgetLock.objects.filter(key=key).update(waits=F("waits") + 1)
    return seconds


def _acquire_db(key: str, token: str, within: Budget, leave_room_to_page: bool = False) -> float:
    from gdpr_requests.models import QueryBudgetUse

    window = timedelta(seconds=within.window_seconds)
    for _attempt in range(3):
        with transaction.atomic():
            if not _locked(key):
                continue
            now = timezone.now()
            starts, running = _counted(key, within, now)
            room = min(running + 1, within.limit - 1) if leave_room_to_page else 0
            if len(starts) + room >= within.limit:
                # Until enough of the oldest age out, or sooner should a running query end and give its room back.
                wait = max(0.001, (starts[len(starts) + room - within.limit] + window - now).total_seconds())
                return _wait_db(key, min(wait, BUSY_RETRY_SECONDS) if running and room else wait)
            if running >= within.concurrency:
                return _wait_db(key, BUSY_RETRY_SECONDS)
            QueryBudgetUse.objects.create(
                key=key, token=token, counts_from=now, held_until=now + timedelta(seconds=hold_seconds())
            )
            return 0.0
    return BUSY_RETRY_SECONDS


def _next_page_db(key: str, token: str, new: str, within: Budget) -> float:
    from gdpr_requests.models import QueryBudgetUse

    window = timedelta(seconds=within.window_seconds)
    for _attempt in range(3):
        with transaction.atomic():
            if not _locked(key):
                continue
            now = timezone.now()
            page = QueryBudgetUse.objects.filter(key=key, token=token, released_at__isnull=True)
            held = page.filter(held_until__gt=now).exists()
            page.update(released_at=now, counts_from=now)
            starts, running = _counted(key, within, now)
            if len(starts) >= within.limit:
                return _wait_db(key, max(0.001, (starts[0] + window - now).total_seconds()))
            if not held and running >= within.concurrency:
                return _wait_db(key, BUSY_RETRY_SECONDS)
            QueryBudgetUse.objects.create(
                key=key, token=new, counts_from=now, held_until=now + timedelta(seconds=hold_seconds())
            )
            return 0.0
    release(key, token)
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


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _eval(script: str, key: str, *args: Any) -> float:
    import redis

    try:
        result = _redis().eval(script, 2, REDIS_PREFIX + key + ":window", REDIS_PREFIX + key + ":held", *args)
    except redis.RedisError as exc:
        logger.warning("mixpanel query limiter: Redis unavailable (%s)", type(exc).__name__)
        raise QueryLimiterUnavailable("the query limiter's Redis did not answer") from None
    return int(result) / 1000.0


def _acquire_redis(key: str, token: str, within: Budget, leave_room_to_page: bool = False) -> float:
    return _eval(
        _ACQUIRE_SCRIPT,
        key,
        token,
        within.limit,
        _ms(within.window_seconds),
        within.concurrency,
        _ms(hold_seconds()),
        _ms(BUSY_RETRY_SECONDS),
        int(leave_room_to_page),
    )


def _next_page_redis(key: str, token: str, new: str, within: Budget) -> float:
    return _eval(
        _NEXT_PAGE_SCRIPT,
        key,
        token,
        new,
        within.limit,
        _ms(within.window_seconds),
        within.concurrency,
        _ms(hold_seconds()),
        _ms(BUSY_RETRY_SECONDS),
    )
