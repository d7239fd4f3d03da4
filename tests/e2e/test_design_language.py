"""One design language: the portal, the staff workspace (Django admin) and the auditor reports look alike.

All three link gdpr_requests/static/gdpr_requests/tokens.css. In a real browser, at 1280 and 390 px, this reads the
computed styles that a person sees (the body's font, the masthead's colour, the name in it, and the primary,
secondary and danger buttons) on a page of each face and asserts that they are the same; a "Back" link is
secondary-style, never red. Every page visited must fit the width (no sideways scroll) and is screenshotted to the
test's output folder.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from gdpr_requests.requests import tokens
from tests.e2e.conftest import staff_requests

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {"laptop": (1280, 800), "phone": (390, 844)}

# What a face looks like: the computed style of its parts. A missing part is reported as None, so that a renamed
# class fails the comparison instead of the script.
LOOK = """(parts) => {
  const style = (selector) => {
    const el = selector && document.querySelector(selector);
    return el ? getComputedStyle(el) : null;
  };
  const button = (selector) => {
    const s = style(selector);
    return s && {background: s.backgroundColor, colour: s.color, radius: s.borderTopLeftRadius, weight: s.fontWeight};
  };
  const masthead = style(parts.masthead), brand = style(parts.brand);
  return {
    font: getComputedStyle(document.body).fontFamily,
    masthead: masthead && masthead.backgroundColor,
    brand: brand && brand.color,
    primary: button(parts.primary),
    secondary: button(parts.secondary),
    danger: button(parts.danger),
  };
}"""

PORTAL = {"masthead": ".site-header", "brand": ".site-header .brand"}
ADMIN = {"masthead": "#header", "brand": "#site-name a"}
REPORTS = {"masthead": ".topbar", "brand": ".topbar .brand"}
TRANSPARENT = "rgba(0, 0, 0, 0)"


@pytest.fixture
def requests_to_show(staff_session):
    return staff_requests(staff_session[0], 4)


def visit(page, shots, url: str, name: str, parts: dict[str, str]) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_load_state()
    shots(page, name)
    scroll_width, client_width = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert scroll_width <= client_width + 1, f"{name}: the page scrolls sideways ({scroll_width} > {client_width})"
    look: dict[str, Any] = page.evaluate(LOOK, parts)
    return look


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_portal_admin_and_reports_share_one_look(page, live_server, staff_session, requests_to_show, shots, viewport):
    width, height = VIEWPORTS[viewport]
    page.set_viewport_size({"width": width, "height": height})
    page.context.add_cookies([{"name": "sessionid", "value": staff_session[1], "url": live_server.url}])
    base = live_server.url
    dsr = requests_to_show[1]
    status_token = tokens.make_token(dsr, tokens.STATUS)
    action = "admin:gdpr_requests_datasubjectrequest_action"

    portal_home = visit(page, shots, base + reverse("portal:home"), f"{viewport}-portal-home",
                        {**PORTAL, "primary": ".button--primary"})  # fmt: skip
    visit(page, shots, base + reverse("portal:request"), f"{viewport}-portal-form", PORTAL)
    portal_withdraw = visit(
        page, shots, base + reverse("portal:withdraw", args=[status_token]), f"{viewport}-portal-withdraw",
        {**PORTAL, "secondary": ".button--secondary", "danger": ".button--danger"},
    )  # fmt: skip
    visit(page, shots, base + reverse("admin:index"), f"{viewport}-admin-index", ADMIN)
    visit(page, shots, base + reverse("admin:gdpr_requests_datasubjectrequest_changelist"), f"{viewport}-admin-list",
          ADMIN)  # fmt: skip
    admin_request = visit(
        page, shots, base + reverse("admin:gdpr_requests_datasubjectrequest_change", args=[dsr.pk]),
        f"{viewport}-admin-request",
        {**ADMIN, "secondary": ".dsr-actions a.button:not(.dsr-danger)", "danger": ".dsr-actions a.button.dsr-danger"},
    )  # fmt: skip
    admin_approve = visit(
        page, shots, base + reverse(action, args=[dsr.pk, "approve"]), f"{viewport}-admin-approve",
        {**ADMIN, "primary": ".submit-row input.default", "secondary": ".submit-row a.closelink"},
    )  # fmt: skip
    admin_cancel = visit(
        page, shots, base + reverse(action, args=[dsr.pk, "cancel"]), f"{viewport}-admin-cancel",
        {**ADMIN, "secondary": ".submit-row a.closelink", "danger": ".submit-row input.dsr-danger"},
    )  # fmt: skip
    visit(page, shots, base + reverse("reports:index"), f"{viewport}-reports-index", REPORTS)
    reports_summary = visit(
        page, shots, base + reverse("reports:summary"), f"{viewport}-reports-summary",
        {**REPORTS, "primary": "form button[type=submit]", "secondary": "a.button.secondary"},
    )  # fmt: skip

    # Type and masthead: one font, one masthead colour, one colour for the name in it.
    for key in ("font", "masthead", "brand"):
        seen = {"portal": portal_home[key], "admin": admin_approve[key], "reports": reports_summary[key]}
        assert None not in seen.values() and len(set(seen.values())) == 1, f"{key} differs: {seen}"
    assert portal_home["masthead"] != TRANSPARENT and portal_home["masthead"] != portal_home["brand"]

    # The primary button: colour, text colour, radius and weight.
    primary = {
        "portal": portal_home["primary"],
        "admin": admin_approve["primary"],
        "reports": reports_summary["primary"],
    }
    assert None not in primary.values(), primary
    assert primary["portal"] == primary["admin"] == primary["reports"], primary
    assert primary["portal"]["background"] != TRANSPARENT

    # "Back" and other second choices: the secondary look everywhere, the "Back" beside a red button included.
    secondary = {
        "portal": portal_withdraw["secondary"],
        "admin back (approve)": admin_approve["secondary"],
        "admin back (cancel)": admin_cancel["secondary"],
        "admin request page actions": admin_request["secondary"],
        "reports": reports_summary["secondary"],
    }
    assert None not in secondary.values(), secondary
    assert len({tuple(look.items()) for look in secondary.values()}) == 1, secondary

    # Danger: one red button on the portal's "withdraw" and on the admin's "Cancel request" form; the request
    # page's link to that form is outlined in the same red.
    danger = {"portal": portal_withdraw["danger"], "admin cancel form": admin_cancel["danger"]}
    assert None not in danger.values(), danger
    assert danger["portal"] == danger["admin cancel form"], danger
    red = danger["portal"]["background"]
    assert red not in {primary["portal"]["background"], secondary["portal"]["background"]}, danger
    assert admin_request["danger"] and admin_request["danger"]["colour"] == red, admin_request["danger"]
    assert secondary["admin back (cancel)"]["background"] != red
