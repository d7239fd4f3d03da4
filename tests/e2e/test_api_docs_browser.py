"""The API's documentation page in a real browser: Swagger UI loads from the package's static files and renders
every operation with no refusal from the site's Content-Security-Policy."""

from __future__ import annotations

import pytest

from tests.e2e.test_portal_browser import watch

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_swagger_ui_renders_every_operation_inside_the_csp(page, live_server):
    problems: list[str] = []
    watch(page, problems)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".opblock", timeout=20000)
    operations = {
        page.locator(".opblock-summary-path").nth(i).get_attribute("data-path")
        for i in range(page.locator(".opblock").count())
    }
    assert operations == {
        "/api/v1/requests/",
        "/api/v1/requests/{reference}/",
        "/api/v1/requests/{reference}/cancel/",
        "/api/v1/audit-events/",
    }
    assert problems == []
    assert all(url.startswith(live_server.url) for url in requested)  # no CDN
