"""Refuse request bodies over settings.DSR_MAX_BODY_BYTES before anything reads them.

No form here takes files, and the largest legitimate post (the request form, an admin action on a page of
rows) is a few kilobytes. Without this, Django would parse a multipart body of any size, spooling its files to
disk, before the CSRF check even runs. The declared Content-Length is checked, so nothing of an oversized body
is read; Django reads no more than that length (a body without one is read as empty). The proxy in front
should refuse such bodies first (nginx ``client_max_body_size``, see .env.example).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.middleware.locale import LocaleMiddleware
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

# The development-only fake Mixpanel API receives the pipeline's deletion batches, which can be larger.
SANDBOX_PREFIX = "/sandbox/mixpanel/"
# Pages for staff and auditors: English, not the visitor's language.
STAFF_PREFIXES = ("/admin/", "/reports/", "/sandbox/")
# Mixpanel's cohort sync posts pages of up to 1,000 members; that view applies COHORT_MAX_BODY_BYTES itself and
# answers in Mixpanel's shape.
COHORT_PREFIX = "/integrations/mixpanel/cohorts/"
# The REST API takes JSON bodies up to API_MAX_BODY_BYTES and answers a refusal in RFC 9457's shape, so that a
# client that sent too many ids reads a field error rather than an HTML page.
API_PREFIX = "/api/"


def _declared_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


class MaxBodySizeMiddleware:
    """Answer 413 with a short page when the declared body is over the limit (400 when it is not a number)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = _declared_length(request)
        if length is None:
            return _refuse(request, 400, _("Bad request"), _("The request could not be read."))
        if request.path_info.startswith(API_PREFIX):
            if length > settings.API_MAX_BODY_BYTES:
                return _api_too_large()
            return self.get_response(request)
        if (
            length > settings.DSR_MAX_BODY_BYTES
            and not (settings.MIXPANEL_SANDBOX_ENABLED and request.path_info.startswith(SANDBOX_PREFIX))
            and not request.path_info.startswith(COHORT_PREFIX)
        ):
            return _refuse(
                request,
                413,
                _("Too much data"),
                _(
                    "What was sent is larger than any form on this site accepts. Go back and try again without "
                    "attaching or pasting large content."
                ),
            )
        return self.get_response(request)


def _api_too_large() -> HttpResponse:
    problem = {
        "type": "about:blank",
        "title": "Request body too large",
        "status": 413,
        "detail": f"The body is larger than {settings.API_MAX_BODY_BYTES} bytes, which no valid request needs.",
    }
    response = HttpResponse(json.dumps(problem), status=413, content_type="application/problem+json")
    response["Connection"] = "close"
    return response


def _refuse(request: HttpRequest, status: int, title: Promise, text: Promise) -> HttpResponse:
    # This runs before the locale middleware: the page is put in the visitor's language here.
    with translation.override(translation.get_language_from_request(request)):
        body = render_to_string("portal/body_refused.html", {"title": str(title), "text": str(text)})
    response = HttpResponse(body, status=status)
    # The body was not read: the connection cannot carry another request.
    response["Connection"] = "close"
    response["Cache-Control"] = "no-store"
    return response


class PublicLocaleMiddleware(LocaleMiddleware):
    """Django's LocaleMiddleware for the public side only: the staff admin and the auditor reports stay in
    settings.LANGUAGE_CODE whatever the browser asks for (Django ships admin translations that would otherwise
    switch it). The public language comes from the switcher's cookie, then Accept-Language, then LANGUAGE_CODE;
    URLs carry no language prefix, so links in old emails keep working.
    """

    def process_request(self, request: HttpRequest) -> None:
        if request.path_info.startswith(STAFF_PREFIXES):
            translation.activate(settings.LANGUAGE_CODE)
            request.LANGUAGE_CODE = translation.get_language()
            return
        super().process_request(request)

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if request.path_info.startswith(STAFF_PREFIXES):
            return response
        return super().process_response(request, response)
