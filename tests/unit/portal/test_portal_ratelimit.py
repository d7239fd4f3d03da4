"""Rate limits behind trusted proxies: the client is the entry the proxies added, never one it sent itself."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from gdpr_requests.models import DataSubjectRequest
from gdpr_requests.portal import ratelimit

pytestmark = pytest.mark.django_db

FORM = {"kind": "access", "name": "Ana", "residence": "eea_uk", "distinct_ids": "", "message": ""}


@pytest.mark.parametrize(
    ("hops", "forwarded", "remote", "client"),
    [
        (0, "1.1.1.1", "10.0.0.9", "10.0.0.9"),  # no proxy trusted: the header is ignored
        (1, "203.0.113.7", "10.0.0.9", "203.0.113.7"),
        (1, "6.6.6.6, 203.0.113.7", "10.0.0.9", "203.0.113.7"),  # the client prepended a made-up entry
        (2, "6.6.6.6, 203.0.113.7, 10.0.0.8", "10.0.0.9", "203.0.113.7"),
        (2, "203.0.113.7, 10.0.0.8", "10.0.0.9", "203.0.113.7"),
        (2, "10.0.0.8", "10.0.0.9", "10.0.0.9"),  # fewer entries than proxies: not through them all
    ],
)
def test_the_client_is_the_entry_the_trusted_proxies_added(settings, hops, forwarded, remote, client):
    settings.DSR_TRUSTED_PROXY_HOPS = hops
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert ratelimit.client_ip(request) == client


@pytest.mark.parametrize(
    ("hops", "proxies"),
    [(1, ""), (2, ", 10.0.0.8")],  # the entries the trusted proxies append after the client's address
)
def test_spoofed_first_entries_do_not_escape_the_per_ip_limit(settings, hops, proxies):
    settings.DSR_TRUSTED_PROXY_HOPS = hops
    settings.DSR_PUBLIC_RATE_LIMITS = {"submit": {"ip": (3, 3600)}}
    proxy = Client(REMOTE_ADDR="10.0.0.9")

    def post(spoofed: str, client_ip: str, n: int) -> int:
        forwarded = f"{spoofed}, {client_ip}{proxies}"
        data = {**FORM, "email": f"p{n}@example.org"}
        return proxy.post(reverse("portal:request"), data, HTTP_X_FORWARDED_FOR=forwarded).status_code

    assert [post(f"6.6.6.{n}", "203.0.113.7", n) for n in range(4)] == [302, 302, 302, 429]
    # Another client behind the same proxies has its own allowance, whatever it claims to be.
    assert post("203.0.113.7", "198.51.100.4", 9) == 302
    assert DataSubjectRequest.objects.count() == 4


def test_an_attempt_refused_for_its_ip_does_not_count_against_its_request(settings):
    settings.DSR_PUBLIC_RATE_LIMITS = {"code_send": {"ip": (1, 3600), "request": (2, 3600)}}
    ratelimit.check("code_send", ip="203.0.113.66", subject_key="DSR-AAAA-BBBB")
    for _ in range(5):
        with pytest.raises(ratelimit.PublicRateLimited):
            ratelimit.check("code_send", ip="203.0.113.66", subject_key="DSR-AAAA-BBBB")
    ratelimit.check("code_send", ip="198.51.100.7", subject_key="DSR-AAAA-BBBB")  # the request's second of two
    with pytest.raises(ratelimit.PublicRateLimited):
        ratelimit.check("code_send", ip="198.51.100.8", subject_key="DSR-AAAA-BBBB")
