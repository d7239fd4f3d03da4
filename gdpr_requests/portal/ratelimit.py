"""Rate limits on the public portal: per client IP, and per request for the actions about one request.

Fixed windows counted in Django's cache (Redis in production, shared by every web process; locmem in
development). Keys hold keyed hashes, never an address in clear. The defaults below can be overridden per
action and scope with ``settings.DSR_PUBLIC_RATE_LIMITS`` ({"submit": {"ip": (10, 3600)}}), and
``settings.DSR_PUBLIC_RATE_LIMITS_ENABLED = False`` turns them all off (e.g. for the load benchmark).

There is deliberately no limit per email address here: anyone can type anyone's address, so such a limit
would let a stranger lock a person out of the form. What protects an address from a flood is the limit on
the emails sent to it (notifications.outbox, LINK_EMAILS_PER_HOUR); its submissions are always taken.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest

from gdpr_requests.cache import count_hit


@dataclass(frozen=True)
class Limit:
    count: int
    seconds: int


# Generous for a person (who submits once or twice), tight for a script. "request" counts per request the
# action is about (the download code of one export); it is only reached through that request's signed link.
DEFAULT_LIMITS: dict[str, dict[str, Limit]] = {
    "submit": {"ip": Limit(20, 3600)},
    "resend": {"ip": Limit(10, 3600)},
    "code_send": {"ip": Limit(10, 3600), "request": Limit(5, 3600)},
    "code_entry": {"ip": Limit(30, 3600), "request": Limit(15, 3600)},
    "withdraw": {"ip": Limit(20, 3600)},
}


class PublicRateLimited(Exception):
    """Too many attempts; ``retry_after`` is the number of seconds until the window ends."""

    def __init__(self, action: str, retry_after: int) -> None:
        super().__init__(f"rate limited: {action}")
        self.action = action
        self.retry_after = max(1, retry_after)


def client_ip(request: HttpRequest) -> str:
    """The client's address; behind N trusted proxies, the Nth address from the right of X-Forwarded-For."""
    hops = getattr(settings, "DSR_TRUSTED_PROXY_HOPS", 0)
    if hops:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _limit(action: str, scope: str) -> Limit | None:
    override = getattr(settings, "DSR_PUBLIC_RATE_LIMITS", {}).get(action, {}).get(scope)
    if override is not None:
        return Limit(*override)
    return DEFAULT_LIMITS.get(action, {}).get(scope)


def _digest(value: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]


def _hit(action: str, scope: str, digest: str, limit: Limit) -> int | None:
    """Count one attempt; the seconds to wait when over the limit, else None."""
    now = int(time.time())
    window = now // limit.seconds
    count = count_hit(f"dsr:rl:{action}:{scope}:{digest}:{window}", timeout=limit.seconds + 5)
    if count > limit.count:
        return (window + 1) * limit.seconds - now
    return None


def check(action: str, *, ip: str | None = None, subject_key: str | None = None) -> None:
    """Count an attempt at ``action``, per IP first; raise PublicRateLimited at the first scope over its limit.

    An attempt refused for its IP is not counted against its request: a client over its own limit cannot use
    up the allowance of a request it names.
    """
    if not settings.DSR_PUBLIC_RATE_LIMITS_ENABLED:
        return
    scopes = (("ip", _digest(ip) if ip else None), ("request", _digest(subject_key) if subject_key else None))
    for scope, digest in scopes:
        limit = _limit(action, scope)
        if digest is None or limit is None:
            continue
        wait = _hit(action, scope, digest, limit)
        if wait is not None:
            raise PublicRateLimited(action, wait)
