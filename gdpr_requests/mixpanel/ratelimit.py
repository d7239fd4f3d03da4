"""The shared rate limiter for Mixpanel's GDPR API: at most one call per MIXPANEL_MIN_INTERVAL_SECONDS per
project and credential, held across every worker process and host.

Creates, status polls, cancels and downloads all take a slot here first, and report ``finished(key)`` when
their call is over, so the next call starts a full interval after the end of this one. ``acquire(key)`` never sleeps: it
returns 0.0 when the caller holds the slot and may call now, or the seconds until the slot frees (nothing is
taken then), so a Celery task can reschedule itself instead of blocking a worker.

Two stores, chosen by settings.REDIS_URL:
- Redis: ``SET key NX PX interval`` in a Lua script (atomic; Redis's own clock, so hosts' clocks do not matter);
- the database otherwise: one RateLimitSlot row per key whose ``available_at`` moves forward with a conditional
  UPDATE (``... WHERE available_at <= now``), so two callers can never both take the same slot. That store
  relies on the hosts' clocks agreeing (NTP); production runs Redis.

Keys name a project and a hash of its OAuth token (``key_for``): a new token is a new credential at Mixpanel.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import timedelta
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

# KEYS[1] the slot, KEYS[2] the wait counter; ARGV[1] the interval in ms. Returns 0 (slot taken) or the ms to wait.
_ACQUIRE_SCRIPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
redis.call('INCR', KEYS[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 1 then
  ttl = 1
end
return ttl
"""


class RateLimiterUnavailable(Exception):
    """The store (Redis) did not answer: treat it as "no slot now" and try again later."""


def key_for(*, project_id: int, oauth_token: str) -> str:
    """The limiter key of one project and credential. The token itself never leaves this function."""
    digest = hashlib.sha256(oauth_token.encode()).hexdigest()[:16]
    return f"{project_id}:{digest}"


def interval_seconds() -> float:
    return max(0.0, float(settings.MIXPANEL_MIN_INTERVAL_SECONDS))


def acquire(key: str) -> float:
    """Take the slot for ``key`` if it is free: return 0.0; otherwise return the seconds to wait (> 0)."""
    interval = interval_seconds()
    if interval <= 0:
        return 0.0
    if settings.REDIS_URL:
        return _acquire_redis(key, interval)
    return _acquire_db(key, interval)


def finished(key: str) -> None:
    """The call that took ``key``'s slot has ended: the next may start one interval from now, not from when this
    one started. Spacing calls from the end of the previous one keeps them apart at Mixpanel's end too, however
    long the request took to arrive or be handled there (a slow first response would otherwise let the next
    call arrive within the same second). Never raises: the slot already spaces calls from their start."""
    interval = interval_seconds()
    if interval <= 0:
        return
    try:
        if settings.REDIS_URL:
            _redis().set(REDIS_PREFIX + key, "1", px=max(1, round(interval * 1000)))
        else:
            from ..models import RateLimitSlot

            free_at = timezone.now() + timedelta(seconds=interval)
            RateLimitSlot.objects.filter(key=key, available_at__lt=free_at).update(available_at=free_at)
    except Exception as exc:  # a Redis hiccup: the start-to-start spacing still holds
        logger.warning("mixpanel rate limiter: could not extend a slot (%s)", type(exc).__name__)


def wait_count() -> int:
    """How many times a caller was told to wait (for metrics), in the store in use."""
    if settings.REDIS_URL:
        try:
            value = _redis().get(REDIS_WAITS_KEY)
        except Exception as exc:  # any redis error: the metric is simply unavailable
            raise RateLimiterUnavailable("the rate limiter's Redis did not answer") from exc
        return int(value or 0)
    from ..models import RateLimitSlot

    return int(RateLimitSlot.objects.aggregate(total=Sum("waits"))["total"] or 0)


# --- database store -----------------------------------------------------------------------------------


def _acquire_db(key: str, interval: float) -> float:
    from ..models import RateLimitSlot

    # Savepoints, so that a caller inside a transaction keeps it usable after an IntegrityError; a caller that
    # is not in one (the pipeline) commits at once and holds no row lock over its HTTP call.
    for _attempt in range(3):
        now = timezone.now()
        free_at = now + timedelta(seconds=interval)
        taken = RateLimitSlot.objects.filter(key=key, available_at__lte=now).update(available_at=free_at)
        if taken:
            return 0.0
        current = RateLimitSlot.objects.filter(key=key).values_list("available_at", flat=True).first()
        if current is None:
            try:
                with transaction.atomic():
                    RateLimitSlot.objects.create(key=key, available_at=free_at)
                return 0.0
            except IntegrityError:  # another caller created it first: its slot, so look again
                continue
        wait = (current - now).total_seconds()
        if wait <= 0:  # it freed between our two statements: try to take it again
            continue
        RateLimitSlot.objects.filter(key=key).update(waits=F("waits") + 1)
        return wait
    return min(interval, 0.05)


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


def _acquire_redis(key: str, interval: float) -> float:
    import redis

    interval_ms = max(1, round(interval * 1000))
    try:
        result = _redis().eval(_ACQUIRE_SCRIPT, 2, REDIS_PREFIX + key, REDIS_WAITS_KEY, interval_ms)
    except redis.RedisError as exc:
        # Never fall back to another store: callers still on Redis would not see our calls.
        logger.warning("mixpanel rate limiter: Redis unavailable (%s)", type(exc).__name__)
        raise RateLimiterUnavailable("the rate limiter's Redis did not answer") from None
    return 0.0 if int(result) == 0 else int(result) / 1000.0
