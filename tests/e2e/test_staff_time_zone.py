"""Staff read times in their own time zone: the page's script tells the server the browser's zone (a cookie),
and the request's timeline is drawn in it after one reload."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.e2e.conftest import staff_requests

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_timeline_follows_the_browsers_time_zone(browser, live_server, staff_session, settings, shots):
    settings.TIME_ZONE = "UTC"
    (dsr,) = staff_requests(staff_session[0], 1)
    context = browser.new_context(timezone_id="Asia/Tokyo", viewport={"width": 1280, "height": 800})
    try:
        context.add_cookies([{"name": "sessionid", "value": staff_session[1], "url": live_server.url}])
        page = context.new_page()
        page.goto(live_server.url + reverse("admin:gdpr_requests_datasubjectrequest_change", args=[dsr.pk]))
        page.get_by_text("Times in Asia/Tokyo").wait_for(timeout=10_000)
        assert {c["name"]: c["value"] for c in context.cookies()}["dsr_tz"] == "Asia/Tokyo"
        shots(page, "request-in-tokyo-time")
        # The next staff page is drawn in that zone at once (the cookie is set).
        page.goto(live_server.url + reverse("admin:gdpr_requests_datasubjectrequest_history", args=[dsr.pk]))
        assert page.get_by_text("Times in Asia/Tokyo").is_visible()
    finally:
        context.close()
