"""The request form under any input: never a 500, every error attached to and naming its field."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.portal.forms import DataRequestForm, DownloadCodeForm, ResendLinkForm

pytestmark = pytest.mark.django_db

ODD = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202eevil",  # right-to-left override
    "\ufeff",
    "e\u0301\u0301\u0301",
    "😀" * 300,
    "\U0010ffff",
    "ǅ" * 5000,
    "\r\n\t",
    "<script>alert(1)</script>",
    "a@b",
    "ana@example.org",
    "ANA@EXAMPLE.ORG ",
    "ana@exa mple.org",
    "x" * 255 + "@example.org",
    "用户@例子.广告",
]
long_text = st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=4), st.integers(60, 2000))
odd_text = st.one_of(st.sampled_from(ODD), st.text(max_size=300), long_text)
VALID = {
    "name": st.just("Ana"),
    "email": st.just("ana@example.org"),
    "kind": st.sampled_from(["access", "deletion"]),
    "residence": st.sampled_from(["eea_uk", "california", "elsewhere"]),
    "disclosure_type": st.sampled_from(["", "Data", "Categories", "Sources"]),
    "distinct_ids": st.just("user-1"),
    "message": st.just(""),
}
form_data = st.fixed_dictionaries(
    {name: st.one_of(valid, odd_text) for name, valid in VALID.items()},
    optional={"website": st.one_of(st.just(""), odd_text)},
)


def start_tags(html: str) -> list[tuple[str, dict[str, str]]]:
    tags: list[tuple[str, dict[str, str]]] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, {name: value or "" for name, value in attrs}))

    Collector().feed(html)
    return tags


def assert_errors_name_their_fields(form) -> None:
    assert not form.non_field_errors(), form.non_field_errors()
    for field, messages in form.errors.items():
        assert field in form.fields, field
        noun = form.nouns[field]
        for message in messages:
            assert noun in message.lower(), (field, message)


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=form_data)
def test_any_input_is_either_valid_or_refused_with_errors_that_name_their_field(data, settings):
    settings.DSR_PUBLIC_RATE_LIMITS_ENABLED = False
    form = DataRequestForm(data, client_ip="192.0.2.1")
    if form.is_valid():
        assert form.cleaned_data["regulation"] in {"gdpr", "ccpa"}
        assert len(form.cleaned_data["name"]) <= 200
    else:
        assert_errors_name_their_fields(form)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=form_data)
def test_posting_any_input_never_gives_a_server_error(data, settings):
    settings.DSR_PUBLIC_RATE_LIMITS_ENABLED = False
    response = Client(raise_request_exception=True).post("/request/", data)
    assert response.status_code in {200, 302}
    if response.status_code == 200:
        html = response.content.decode()
        assert "There is a problem" in html
        assert 'aria-invalid="true"' in html


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(email=odd_text, code=odd_text)
def test_the_small_forms_name_their_field_too(email, code, settings):
    settings.DSR_PUBLIC_RATE_LIMITS_ENABLED = False
    for form in (ResendLinkForm({"email": email}, client_ip="192.0.2.1"), DownloadCodeForm({"code": code})):
        if not form.is_valid():
            assert_errors_name_their_fields(form)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "Enter your name."),
        ("name", "x" * 201, "Your name is too long: use at most 200 characters (it has 201)."),
        ("name", "Ana\x00", "null character"),
        ("name", "Ana\x07", "Your name contains a character we cannot accept."),
        ("name", "Ana \u202egnp.exe", "a hidden character that changes the direction of text"),
        ("name", "\u2066Ana\u2069", "a hidden character that changes the direction of text"),
        ("name", "Ana\u200f", "a hidden character that changes the direction of text"),
        ("name", "Reset at evil.example/reset", "Your name looks like it contains a web address"),
        ("name", "Ana https://evil.example", "Your name looks like it contains a web address"),
        ("name", "Ana http://x", "Your name looks like it contains a web address"),
        ("name", "see www.evil", "Your name looks like it contains a web address"),
        ("name", "Ana (bit.ly)", "Your name looks like it contains a web address"),
        ("message", "Hello \u202dthere", "Your message contains a hidden character"),
        ("email", "", "Enter your email address."),
        ("email", "ana@", "Enter your email address in the right format"),
        ("email", "a" * 250 + "@example.org", "Your email address is too long"),
        ("kind", "rectify", "Choose which request you are making"),
        ("residence", "mars", "where you live"),
        ("distinct_ids", "u" * 256, "Each user id must be at most 255 characters long."),
        ("distinct_ids", "\n".join(f"id-{n}" for n in range(51)), "Enter at most 50 user ids."),
        ("message", "m" * 2001, "Your message is too long"),
    ],
)
def test_each_bad_field_gets_a_plain_message_tied_to_it_in_the_page(client, field, value, message):
    data = {"kind": "access", "name": "Ana", "email": "ana@example.org", "residence": "eea_uk", field: value}
    response = client.post("/request/", data)
    assert response.status_code == 200
    html = response.content.decode()
    form = response.context["form"]
    assert list(form.errors) == [field]
    assert message in form.errors[field][0]
    # The message is in the summary (linked to the field) and next to the field, which points at it.
    tags = start_tags(html)
    assert any(attrs.get("id") == f"id_{field}_error" for _, attrs in tags)
    if field in {"kind", "residence"}:
        assert f'href="#id_{field}_0"' in html
        assert [a for t, a in tags if t == "fieldset" and f"id_{field}_error" in a.get("aria-describedby", "")]
        radios = [a for t, a in tags if t == "input" and a.get("name") == field]
        assert radios and all(a.get("aria-invalid") == "true" for a in radios)
    else:
        assert f'href="#id_{field}"' in html
        (element,) = [a for _, a in tags if a.get("id") == f"id_{field}"]
        assert f"id_{field}_error" in element["aria-describedby"].split()
        assert element["aria-invalid"] == "true"
    assert not DataSubjectRequest.objects.exists()


@pytest.mark.parametrize(
    "name", ["Ana Núñez", "J. R. R. Tolkien", "J.R. Smith", "Mary-Ann O'Neil", "Smith, Ana", "D.J."]
)
def test_ordinary_names_with_dots_are_accepted(name):
    form = DataRequestForm(
        {"kind": "access", "name": name, "email": "ana@example.org", "residence": "eea_uk"}, client_ip="192.0.2.1"
    )
    assert form.is_valid(), form.errors


def test_the_start_page_explains_the_rights_and_links_to_the_form(client):
    response = client.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'href="/request/"' in html
    for words in ("GDPR", "CCPA", "copy of your data", "Delete your data"):
        assert words in html
    assert "Content-Security-Policy" in response.headers
