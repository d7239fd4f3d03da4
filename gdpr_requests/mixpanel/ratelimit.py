"""The shared rate limiter for Mixpanel's GDPR API: at most one call per MIXPANEL_MIN_INTERVAL_SECONDS per
project and credential, held across every worker process and host.

Creates, status polls, cancels and downloads all take a slot here first, and report ``finished(key)`` when
their call is over, so the next call starts a full interval after the end of this one. ``acquire(key)`` never
sleeps: it returns 0.0 when the caller holds the slot and may call now, or the seconds until it should look again
(nothing is taken then, and never more than one interval), so a Celery task can reschedule itself instead of
blocking a worker.

A pipeline step does database work between taking its slot and sending its request (the task row, the audit
trail), under load sometimes for longer than the interval. A slot that freed one interval after it was taken
would then let the next call start while this one had not been sent yet: two calls once reached Mixpanel 0.93 s
apart. So a caller that does work first takes the slot ``until_finished``: it stays taken until
``finished(key)`` (then frees one interval later), or, should the caller die, ``hold_seconds()`` after it was
taken. Every call then reaches Mixpanel at least an interval after the previous one was answered, however long
either side took (a safety margin added to the interval would only have made a short gap rarer).

Two stores, chosen by settings.REDIS_URL:
- Redis: ``SET key NX PX ttl`` in a Lua script (atomic; Redis's own clock, so hosts' clocks do not matter);
- the database otherwise: one RateLimitSlot row per key whose ``available_at`` moves forward with a conditional
  UPDATE (``... WHERE available_at <= now``), so two callers can never both take the same slot. That store
  relies on the hosts' clocks agreeing (NTP); production runs Redis.

Keys name a project and a hash of its OAuth token (``key_for``): a new token is a new credential at Mixpanel.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

logger = logging.getLogger(__name__)

REDIS_PREFIX = "dsr:mixpanel-rate:"
REDIS_WAITS_KEY = "dsr:mixpanel-rate-waits"
# A Redis that does not answer within this must not hold a worker: the caller reschedules instead.
REDIS_SOCKET_TIMEOUT_SECONDS = 2.0

# A held slot frees on its own this long after the longest a call can take (a connect and a read timeout), so
# that the database work a step does before sending fits too, even behind a row lock.
HOLD_SLACK_SECONDS = 10.0

# KEYS[1] the slot, KEYS[2] the wait counter; ARGV[1] the slot's value, ARGV[2] how long it is taken (ms), ARGV[3]
# the interval (ms), the longest wait reported. Returns 0 (slot taken) or the ms to wait.
_ACQUIRE_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
redis.call('INCR', KEYS[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then
  ttl = 1
end
if ttl > tonumber(ARGV[3]) then
  ttl = tonumber(ARGV[3])
end
return ttl
"""
# KEYS[1] the slot; ARGV[1] the interval (ms), ARGV[2] the value the caller's held slot was given ('' if none).
# The caller's own hold is cut to one interval from now; anything else is only ever extended to it, so that a
# caller whose hold had run out does not cut short the hold of whoever took the slot next.
_FINISH_SCRIPT = """
if ARGV[2] ~= '' and redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  return 1
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  return 1
end
return 0
"""


class RateLimiterUnavailable(Exception):
    """The store (Redis) did not answer: treat it as "no slot now" and try again later."""


def key_for(*, project_id: int, oauth_token: str) -> str:
    """The limiter key of one project and credential. The token itself never leaves this function."""
    digest = hashlib.sha256(oauth_token.encode()).hexdigest()[:16]
    return f"{project_id}:{digest}"


def interval_seconds() -> float:
    return max(0.0, float(settings.MIXPANEL_MIN_INTERVAL_SECONDS))


def hold_seconds() -> float:
    """How long a slot taken ``until_finished`` stays taken if its caller never reports (a killed worker): the
    interval plus the longest a call can take, a connect and a read timeout, plus HOLD_SLACK_SECONDS."""
    return interval_seconds() + 2 * float(settings.MIXPANEL_HTTP_TIMEOUT_SECONDS) + HOLD_SLACK_SECONDS


# What this thread's held slots were given (Redis: the value; database: available_at), so that finished()
# recognises its own hold. A thread holds at most one slot per key at a time: acquire and finished pair up.
_held = threading.local()


def _holds() -> dict[str, str | datetime]:
    holds = getattr(_held, "slots", None)
    if holds is None:
        holds = _held.slots = {}
    return holds


def acquire(key: str, *, until_finished: bool = False) -> float:
    """Take the slot for ``key`` if it is free: return 0.0; otherwise return the seconds to wait (> 0, at most
    one interval: a held slot may free much sooner than its hold runs out).

    With ``until_finished`` the slot stays taken until ``finished(key)`` from this thread (or hold_seconds()),
    not one interval: for callers that do work between taking the slot and sending their request.
    """
    interval = interval_seconds()
    if interval <= 0:
        return 0.0
    taken_for = hold_seconds() if until_finished else interval
    if settings.REDIS_URL:
        return _acquire_redis(key, interval, taken_for, held=until_finished)
    return _acquire_db(key, interval, taken_for, held=until_finished)


def finished(key: str) -> None:
    """The call that took ``key``'s slot has ended: the next may start one interval from now, not from when this
    one started. Spacing calls from the end of the previous one keeps them apart at Mixpanel's end too, however
    long the request took to arrive or be handled there (a slow first response would otherwise let the next
    call arrive within the same second). A slot this thread took ``until_finished`` is released to that; any
    other is only extended. Never raises: a held slot still frees when its hold runs out."""
    held = _holds().pop(key, None)
    interval = interval_seconds()
    if interval <= 0:
        return
    try:
        if settings.REDIS_URL:
            mine = held if isinstance(held, str) else ""
            _redis().eval(_FINISH_SCRIPT, 1, REDIS_PREFIX + key, _ms(interval), mine)
        else:
            from gdpr_requests.models import RateLimitSlot

            free_at = timezone.now() + timedelta(seconds=interval)
            slots = RateLimitSlot.objects.filter(key=key)
            # Still ours if nobody moved the time we set: cut our hold short. Otherwise only ever extend.
            if not (isinstance(held, datetime) and slots.filter(available_at=held).update(available_at=free_at)):
                slots.filter(available_at__lt=free_at).update(available_at=free_at)
    except Exception as exc:  # a Redis hiccup: a held slot frees when its hold runs out, a plain one after a step
        logger.warning("mixpanel rate limiter: could not release a slot (%s)", type(exc).__name__)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def wait_count() -> int:
    """How many times a caller was told to wait (for metrics), in the store in use."""
    if settings.REDIS_URL:
        try:
            value = _redis().get(REDIS_WAITS_KEY)
        except Exception as exc:  # any redis error: the metric is simply unavailable
            raise RateLimiterUnavailable("the rate limiter's Redis did not answer") from exc
        return int(value or 0)
    from gdpr_requests.models import RateLimitSlot

    return int(RateLimitSlot.objects.aggregate(total=Sum("waits"))["total"] or 0)


# --- database store -----------------------------------------------------------------------------------


def _acquire_db(key: str, interval: float, taken_for: float, *, held: bool) -> float:
    from gdpr_requests.models import RateLimitSlot

    # Savepoints, so that a caller inside a transaction keeps it usable after an IntegrityError; a caller that
    # is not in one (the pipeline) commits at once and holds no row lock over its HTTP call.
    for _attempt in range(3):
        now = timezone.now()
        free_at = now + timedelta(seconds=taken_for)
        if RateLimitSlot.objects.filter(key=key, available_at__lte=now).update(available_at=free_at):
            return _taken(key, free_at if held else None)
        current = RateLimitSlot.objects.filter(key=key).values_list("available_at", flat=True).first()
        if current is None:
            try:
                with transaction.atomic():
                    RateLimitSlot.objects.create(key=key, available_at=free_at)
            except IntegrityError:  # another caller created it first: its slot, so look again
                continue
            return _taken(key, free_at if held else None)
        wait = (current - now).total_seconds()
        if wait <= 0:  # it freed between our two statements: try to take it again
            continue
        RateLimitSlot.objects.filter(key=key).update(waits=F("waits") + 1)
        return min(wait, interval)
    return min(interval, 0.05)


def _taken(key: str, mark: str | datetime | None) -> float:
    """The caller has the slot; a held one's mark is remembered for finished()."""
    if mark is not None:
        _holds()[key] = mark
    return 0.0


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


def _acquire_redis(key: str, interval: float, taken_for: float, *, held: bool) -> float:
    import redis

    # A held slot's value is this caller's own, for finished() to recognise; "1" is nobody's.
    value = uuid.uuid4().hex if held else "1"
    try:
        result = _redis().eval(
            _ACQUIRE_SCRIPT, 2, REDIS_PREFIX + key, REDIS_WAITS_KEY, value, _ms(taken_for), _ms(interval)
        )
    except redis.RedisError as exc:
        # Never fall back to another store: callers still on Redis would not see our calls.
        logger.warning("mixpanel rate limiter: Redis unavailable (%s)", type(exc).__name__)
        raise RateLimiterUnavailable("the rate limiter's Redis did not answer") from None
    if int(result) != 0:
        return int(result) / 1000.0
    return _taken(key, value if held else None)
