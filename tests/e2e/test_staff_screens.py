"""The staff screens fit: the request list, a request page and the approve confirmation at 1280 and 390 px.

For each, a full-page screenshot (under test-results/), no horizontal scrolling of the page, and no cut column:
every table cell's box lies inside the viewport or inside an element that scrolls sideways on its own.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from gdpr_requests.audit.chain import Actor
from gdpr_requests.requests import services
from tests.e2e.conftest import staff_requests

pytestmark = pytest.mark.django_db(transaction=True)

VIEWPORTS = {"laptop": (1280, 800), "phone": (390, 844)}

# Cells (and the page) must fit; a cell may overflow only inside an ancestor that scrolls sideways itself.
CUT_CELLS = """() => {
  const width = document.documentElement.clientWidth;
  const scrolls = (el) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const style = getComputedStyle(a);
      if ((style.overflowX === 'auto' || style.overflowX === 'scroll') && a.scrollWidth > a.clientWidth - 1) return true;
      if ((style.overflowX === 'auto' || style.overflowX === 'scroll')) return true;
    }
    return false;
  };
  const cut = [];
  for (const el of document.querySelectorAll('#content th, #content td, #content .button, #content input[type=submit]')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0) continue;
    if ((box.right > width + 1 || box.left < -1) && !scrolls(el)) cut.push(el.tagName + ':' + el.innerText.slice(0, 30));
  }
  return cut;
}"""


@pytest.fixture
def queue(staff_session):
    made = staff_requests(
        staff_session[0], 12, distinct_id="user-{i}-with-a-rather-long-distinct-identifier-0123456789"
    )
    services.request_add_note(request=made[0], note="Checked the account.", actor=Actor.staff(staff_session[0]))
    return made


def check_fits(page, shots, name: str) -> None:
    page.wait_for_load_state()
    shots(page, name)
    scroll_width, client_width = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert scroll_width <= client_width + 1, f"{name}: the page scrolls sideways ({scroll_width} > {client_width})"
    assert page.evaluate(CUT_CELLS) == [], f"{name}: cut off"


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_the_staff_screens_fit(page, live_server, staff_session, queue, shots, viewport):
    width, height = VIEWPORTS[viewport]
    page.set_viewport_size({"width": width, "height": height})
    page.context.add_cookies([{"name": "sessionid", "value": staff_session[1], "url": live_server.url}])
    base = live_server.url

    page.goto(base + reverse("admin:index"))
    check_fits(page, shots, f"{viewport}-index")
    page.goto(base + reverse("admin:gdpr_requests_datasubjectrequest_changelist"))
    assert page.get_by_text(queue[0].reference).is_visible()
    check_fits(page, shots, f"{viewport}-list")
    if viewport == "laptop":  # at 1280 px every column of the list shows without scrolling its box
        inner, box = page.evaluate(
            "(() => { const r = document.querySelector('#changelist .results'); return [r.scrollWidth, r.clientWidth]; })()"
        )
        assert inner <= box + 1, f"the list's columns are clipped at 1280 px ({inner} > {box})"
        assert page.get_by_role("columnheader", name="Projects").is_visible()
    page.goto(base + reverse("admin:gdpr_requests_datasubjectrequest_change", args=[queue[0].pk]))
    check_fits(page, shots, f"{viewport}-request")
    page.goto(base + reverse("admin:gdpr_requests_datasubjectrequest_action", args=[queue[1].pk, "approve"]))
    assert page.get_by_label("I have checked what these approvals will do, and I approve.").is_visible()
    check_fits(page, shots, f"{viewport}-approve")
