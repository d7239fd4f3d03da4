"""One webhook POST: to an address checked by addresses.check, with a short timeout and no redirects.

It imports no models. Every failure is a TransportError naming its class (never the response body, which
the receiver controls) and whether a retry could help: timeouts, connection errors, 5xx and 429 may; other
4xx and redirects will not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import urllib3

from gdpr_requests.webhooks.addresses import Target, UnsafeWebhookUrl, check

USER_AGENT = "privacy-request-manager-webhooks/1"


class TransportError(Exception):
    def __init__(self, error_class: str, *, permanent: bool, status_code: int | None = None, duration_ms: int = 0):
        super().__init__(error_class)
        self.error_class = error_class
        self.permanent = permanent
        self.status_code = status_code
        self.duration_ms = duration_ms


@dataclass(frozen=True)
class Delivered:
    status_code: int
    duration_ms: int


def _pool(target: Target, address: str, timeout: float) -> urllib3.HTTPConnectionPool:
    limits = urllib3.Timeout(connect=min(timeout, 3.0), read=timeout)
    if target.scheme == "https":
        # Connect to the checked address; verify the certificate for the host name (and send it as SNI).
        return urllib3.HTTPSConnectionPool(
            address,
            target.port,
            timeout=limits,
            retries=False,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
        )
    return urllib3.HTTPConnectionPool(address, target.port, timeout=limits, retries=False)


def post(*, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Delivered:
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = check(url)  # again at connect time: DNS may answer differently than when the URL was saved
    except UnsafeWebhookUrl:
        raise TransportError("UnsafeWebhookUrl", permanent=True, duration_ms=elapsed()) from None
    host_header = target.host if target.port in {80, 443} else f"{target.host}:{target.port}"
    all_headers = {
        **headers,
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    try:
        with _pool(target, target.addresses[0], timeout) as pool:
            response = pool.urlopen(
                "POST",
                target.path,
                body=body,
                headers=all_headers,
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
            )
            response.read(1024, decode_content=False)  # a receiver cannot make us read a large body
            response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise TransportError(type(exc).__name__, permanent=False, duration_ms=elapsed()) from None
    status = response.status
    if 200 <= status < 300:
        return Delivered(status, elapsed())
    retryable = status == 429 or status >= 500
    raise TransportError(f"HTTP {status}", permanent=not retryable, status_code=status, duration_ms=elapsed())
