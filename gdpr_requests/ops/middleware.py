"""The app's middleware: probes answered before host validation, and the headers SecurityMiddleware does not set."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from gdpr_requests.ops.views import healthz, metrics, readyz

# Everything is served by the app itself: no third-party hosts, no inline scripts.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # The admin ships inline scripts of its own; the strict policy covers every other page.
        if not request.path.startswith("/admin/"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        return response


class ProbeMiddleware:
    """Answers the probes before host validation, HTTPS redirect, sessions and CSRF.

    Load balancers and orchestrators call ``/healthz`` and ``/readyz`` by IP address, which is not in
    ALLOWED_HOSTS and would get a 400. The probes reveal nothing, so they skip those checks; ``/metrics`` does
    too, but only when a token guards it: without one, the loopback rule relies on host validation to stop a
    DNS-rebinding page in a local browser from reading it. First in MIDDLEWARE.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path == "/healthz":
            return healthz(request)
        if path == "/readyz":
            return readyz(request)
        if path == "/metrics" and settings.METRICS_TOKEN:
            return metrics(request)
        return self.get_response(request)
