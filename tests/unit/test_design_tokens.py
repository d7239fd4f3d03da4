"""The portal, the staff workspace and the reports share one tokens stylesheet (the design language of issue 13).

Each face's pages link gdpr_requests/tokens.css before the face's own stylesheet (which reads the tokens), and the
faces' stylesheets write no colour of their own: a hex colour may appear only as the value of a custom property
(the admin's dark map of Django's variables), never in a rule.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

pytestmark = pytest.mark.django_db

TOKENS = "gdpr_requests/tokens.css"
STYLESHEET = re.compile(r'<link rel="stylesheet" href="/static/([^"]+)"')


def _stylesheets(response) -> list[str]:
    assert response.status_code == 200, response.status_code
    return STYLESHEET.findall(response.content.decode())


def _linked_before(sheets: list[str], own: str) -> None:
    assert TOKENS in sheets, sheets
    assert own in sheets, sheets
    assert sheets.index(TOKENS) < sheets.index(own), sheets


def test_portal_pages_link_the_tokens_before_portal_css(client):
    _linked_before(_stylesheets(client.get(reverse("portal:home"))), "gdpr_requests/portal.css")


def test_admin_pages_link_the_tokens_before_admin_css(client):
    sheets = _stylesheets(client.get(reverse("admin:login")))
    _linked_before(sheets, "gdpr_requests/admin.css")
    # After Django's own variables, so that admin.css can map them onto the tokens.
    assert sheets.index("admin/css/base.css") < sheets.index(TOKENS), sheets


def test_report_pages_link_the_tokens_before_reports_css(client, auditor_user):
    client.force_login(auditor_user)
    _linked_before(_stylesheets(client.get(reverse("reports:index"))), "gdpr_requests/reports.css")


def _css(name: str) -> str:
    path = finders.find(name)
    assert path, f"{name} is not a static file"
    return Path(str(path)).read_text()


def test_the_tokens_define_the_palette_type_and_buttons():
    tokens = _css(TOKENS)
    for name in ("--ink", "--muted", "--line", "--bg", "--brand", "--brand-dark", "--brand-tint", "--ok", "--ok-tint",
                 "--warn", "--warn-tint", "--error", "--error-tint", "--focus", "--font-sans", "--font-mono",
                 "--text-base", "--radius", "--btn-radius", "--btn-weight", "--btn-primary-bg",
                 "--btn-secondary-bg", "--btn-danger-bg", "--masthead-bg"):  # fmt: skip
        assert re.search(rf"^\s*{name}:", tokens, re.MULTILINE), f"tokens.css has no {name}"


@pytest.mark.parametrize("sheet", ["portal.css", "reports.css", "admin.css"])
def test_face_stylesheets_take_their_colours_from_the_tokens(sheet):
    css = re.sub(r"/\*.*?\*/", "", _css(f"gdpr_requests/{sheet}"), flags=re.DOTALL)
    in_rules = [
        line.strip()
        for line in css.splitlines()
        if re.search(r"#[0-9a-fA-F]{3,8}\b", line) and not re.match(r"\s*--[\w-]+:\s*#[0-9a-fA-F]{3,8};\s*$", line)
    ]
    assert in_rules == [], f"{sheet} writes colours that belong in tokens.css: {in_rules}"
    if sheet != "admin.css":  # the admin maps Django's variables; the others define none of their own
        assert ":root" not in css, f"{sheet} defines its own custom properties"
