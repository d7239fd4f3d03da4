"""How the portal's views are put together: one CSRF guard per view, names that do not clash."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gdpr_requests.mixpanel import client as mixpanel_client
from gdpr_requests.portal import ratelimit, services, urls, views


def _no_referrer_guards(view: Callable) -> int:
    """How many _NoReferrerPageCsrf checks wrap ``view``.

    decorator_from_middleware keeps its middleware instance in the closures of the wrapper it returns; the
    view's layers are reached through ``__wrapped__`` and those closures.
    """
    found: set[int] = set()
    seen: set[int] = set()
    todo: list[object] = [view]
    while todo:
        item = todo.pop()
        if isinstance(item, views._NoReferrerPageCsrf):
            found.add(id(item))
            continue
        if not callable(item) or id(item) in seen:
            continue
        seen.add(id(item))
        todo.extend(cell.cell_contents for cell in getattr(item, "__closure__", None) or ())
        if hasattr(item, "__wrapped__"):
            todo.append(item.__wrapped__)
    return len(found)


def _portal_views() -> dict[str, Callable]:
    return {str(pattern.name): pattern.callback for pattern in urls.urlpatterns}


def test_the_counting_helper_sees_a_guard_applied_twice():
    def page(request):
        return None

    assert _no_referrer_guards(views.no_referrer_csrf(page)) == 1
    assert _no_referrer_guards(views.no_referrer_csrf(views.no_referrer_csrf(page))) == 2


@pytest.mark.parametrize("name", ["verify", "withdraw", "download", "download_code", "resend"])
def test_each_no_referrer_page_is_guarded_exactly_once(name):
    assert _no_referrer_guards(_portal_views()[name]) == 1


def test_the_portal_rate_limit_error_has_its_own_name():
    assert not hasattr(ratelimit, "RateLimited")
    assert ratelimit.PublicRateLimited is not getattr(mixpanel_client, "RateLimited", None)


def test_link_rotation_has_no_service_of_its_own():
    # New links are rotated when the "resend" email goes out (notifications.outbox), not by a separate service.
    assert not hasattr(services, "request_rotate_links")
