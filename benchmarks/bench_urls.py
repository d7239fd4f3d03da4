"""URLconf for benchmark runs: the product's URLs plus two reference views the form is measured against.

- ``/bench/bare/`` (GET): the whole middleware stack and nothing else, the baseline the targets divide by;
- ``/bench/floor/`` (POST): the least a durable form could do: the same CSRF check and the same form validation
  as ``/request/``, then one row (the address's keyed hash, no personal data) written with one INSERT and
  committed. No product page can take in a request for less, so its rate is the ceiling for the real form
  on the machine that runs the benchmark. The table it writes, ``bench_floor``, is made by benchmarks/intake.py.
"""

from __future__ import annotations

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import include, path
from django.views.decorators.http import require_POST

from gdpr_requests.crypto import email_hash
from gdpr_requests.portal.forms import DataRequestForm


def bare(request: HttpRequest) -> HttpResponse:
    """The whole middleware stack and nothing else: no template, no database."""
    return HttpResponse(b"ok", content_type="text/plain")


@require_POST
def floor(request: HttpRequest) -> HttpResponse:
    """Validate the public form and commit one row: the cost of any durable intake on this server."""
    form = DataRequestForm(request.POST, client_ip="127.0.0.1")
    if not form.is_valid():
        return HttpResponse(b"invalid", status=400, content_type="text/plain")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_floor (email_hash) VALUES (%s)", [email_hash(form.cleaned_data["email"])])
    return redirect("portal:request_sent")


urlpatterns = [
    path("bench/bare/", bare),
    path("bench/floor/", floor),
    path("", include("compliance.urls")),
]
