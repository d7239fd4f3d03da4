"""When the pipeline tries again: backoff, poll intervals, leases (read from settings at call time)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Capped exponential backoff with jitter for the ``attempts``-th failure in a row (1-based).

    A server's Retry-After wins (capped at the maximum and never below the rate limit's interval): it knows
    better than our guess. Otherwise "equal jitter": half the exponential step for sure, the other half at
    random, so workers that failed together do not come back together.
    """
    ceiling = float(settings.MIXPANEL_BACKOFF_MAX_SECONDS)
    if retry_after is not None:
        return min(ceiling, max(float(retry_after), float(settings.MIXPANEL_MIN_INTERVAL_SECONDS)))
    step = min(ceiling, float(settings.MIXPANEL_BACKOFF_BASE_SECONDS) * 2 ** max(0, attempts - 1))
    return step / 2 + random.uniform(0, step / 2)


def poll_delay(polls: int) -> float:
    """Seconds until the next status poll after ``polls`` polls: GDPR_POLL_INITIAL_SECONDS doubling to the max."""
    return min(float(settings.GDPR_POLL_MAX_SECONDS), float(settings.GDPR_POLL_INITIAL_SECONDS) * 2 ** max(0, polls))


def after(seconds: float, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=seconds)


def step_lease_seconds() -> float:
    """How long a step holds its task (GDPR_STEP_LEASE_SECONDS). Read at each step, not at import, so that
    override_settings and a test harness's environment reach it."""
    return float(settings.GDPR_STEP_LEASE_SECONDS)


def dispatch_lease_seconds() -> float:
    """How long a queued task stays claimed (GDPR_DISPATCH_LEASE_SECONDS): a message the broker lost is sent
    again by the first sweep after it. Read at call time, like step_lease_seconds."""
    return float(settings.GDPR_DISPATCH_LEASE_SECONDS)
