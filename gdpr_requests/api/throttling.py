"""A rate limit per API key (settings.API_RATE_LIMIT, e.g. "600/min"), counted in the Django cache (Redis in
production), keyed on the key's id: one key shared by a fleet of servers is one caller.

A fixed-window counter: one atomic count per request on ``throttle:api_key:<id>:<window>`` (one round trip to
Redis: gdpr_requests/cache.py count_hit). DRF's
SimpleRateThrottle instead keeps every timestamp of the window in one cache value, read and written back whole
on each request: the cost grows with the limit, and concurrent requests overwrite each other's counts. A fixed
window lets a caller send up to twice the limit across a window boundary, which is fine for this purpose.

When the cache cannot be reached the limit fails open (logged): an outage of Redis must not take the intake API
down with it, and every write still goes through the services' own rules.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from gdpr_requests.cache import count_hit
from gdpr_requests.models import ApiKey

logger = logging.getLogger("gdpr_requests.api")

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """ "600/min" -> (600, 60)."""
    number, _, unit = rate.partition("/")
    return int(number), PERIODS[unit.strip()[:1].lower()]


class ApiKeyRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self.wait_seconds: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        if not isinstance(request.auth, ApiKey):
            return True
        limit, period = parse_rate(settings.API_RATE_LIMIT)  # read per request: tests and operators change it
        now = time.time()
        window = int(now // period)
        try:
            count = count_hit(f"throttle:api_key:{request.auth.pk}:{window}", timeout=period + 1)
        except Exception as exc:  # the cache (Redis) is down: serve unthrottled rather than fail every call
            logger.warning("API rate limit not counted: the cache is unavailable (%s)", type(exc).__name__)
            return True
        if count > limit:
            self.wait_seconds = (window + 1) * period - now
            return False
        return True

    def wait(self) -> float | None:
        return self.wait_seconds
