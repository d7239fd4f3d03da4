"""URLconf for benchmark runs: the product's URLs plus a bare Django view (the baseline)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def bare(request: HttpRequest) -> HttpResponse:
    """The whole middleware stack and nothing else: no template, no database."""
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [
    path("bench/bare/", bare),
    path("", include("compliance.urls")),
]
