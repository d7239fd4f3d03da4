"""Staff pages show times in the staff member's own time zone.

The browser says which zone it is in (static/gdpr_requests/staff_tz.js stores ``Intl`` 's zone name in the
``dsr_tz`` cookie); this middleware activates that zone for the staff workspace and the auditor reports, so the
timeline, the lists and the reports read in local time. A missing or unknown name falls back to the
installation's TIME_ZONE. Only display changes: deadlines are computed in TIME_ZONE (requests.states), whatever the
viewer's zone.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from functools import lru_cache

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

COOKIE = "dsr_tz"
# The faces whose pages follow the viewer's zone (the public portal keeps the installation's).
STAFF_PREFIXES = ("/admin/", "/reports/")


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone_from_cookie(value: str | None) -> zoneinfo.ZoneInfo | None:
    """The zone the cookie names, or None for a missing, overlong or unknown name (never raises)."""
    if not value or len(value) > 64 or value not in _known_zones():
        return None
    return zoneinfo.ZoneInfo(value)


class StaffTimeZoneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        zone = zone_from_cookie(request.COOKIES.get(COOKIE)) if request.path.startswith(STAFF_PREFIXES) else None
        if zone is None:
            return self.get_response(request)
        timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
