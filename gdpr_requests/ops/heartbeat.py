"""Beat's heartbeat: a tiny beat task stamps the time in the shared cache, and deep readiness reads its age.

The stamp proves that beat ticked and that a worker ran what it sent. It lives in the cache, so it can only be
read across processes when the cache is shared (Redis in production); with a per-process cache the answer is
"cannot tell", not "down".
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache

KEY = "ops:beat-heartbeat"
# The entry in settings.CELERY_BEAT_SCHEDULE, and its interval when it has none.
SCHEDULE_NAME = "beat-heartbeat"
DEFAULT_INTERVAL_SECONDS = 60.0
# Beat counts as stopped after this many intervals without a stamp (a busy worker may run one late).
MISSED_TICKS = 3

_PER_PROCESS_CACHES = ("LocMemCache", "DummyCache")


def beat_heartbeat_record(*, now: float | None = None) -> None:
    """Stamp the time of this tick (the beat task calls it)."""
    cache.set(KEY, time.time() if now is None else now, timeout=None)


def cache_is_shared() -> bool:
    """Whether another process (web, beat's worker) reads the same cache as this one."""
    return not settings.CACHES["default"]["BACKEND"].endswith(_PER_PROCESS_CACHES)


def beat_interval_seconds() -> float:
    schedule = settings.CELERY_BEAT_SCHEDULE.get(SCHEDULE_NAME, {}).get("schedule", DEFAULT_INTERVAL_SECONDS)
    return schedule.total_seconds() if isinstance(schedule, timedelta) else float(schedule)


def beat_heartbeat_age(*, now: float | None = None) -> float | None:
    """Seconds since the last stamp, or None when there is none (beat never ticked, or the cache was emptied)."""
    stamp = cache.get(KEY)
    if stamp is None:
        return None
    return max(0.0, (time.time() if now is None else now) - float(stamp))


def beat_is_stale(age: float | None) -> bool:
    return age is None or age > MISSED_TICKS * beat_interval_seconds()
