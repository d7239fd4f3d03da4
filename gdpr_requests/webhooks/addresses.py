"""Server-side request forgery rules for webhook URLs.

With WEBHOOK_SSRF_CHECKS on (always in production) a URL must be https and its host must resolve only to
public addresses: not loopback, private, link-local (cloud metadata at 169.254.169.254), shared (100.64/10),
multicast, reserved or unspecified, IPv4-mapped forms included. The check runs when the URL is saved and again
at connect time, where the transport connects to the very address that was checked (no second lookup that DNS
rebinding could answer differently). Hosts in WEBHOOK_ALLOWED_HOSTS are exempt: the demo and the tests.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings


class UnsafeWebhookUrl(Exception):
    """A URL the rules refuse; the message says why without echoing anything secret."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]  # checked addresses to connect to (in resolver order)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeWebhookUrl(f"The host {host!r} does not resolve.") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def check(url: str) -> Target:
    """Parse and check ``url``; return where to connect. Raises UnsafeWebhookUrl."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeWebhookUrl("The URL is malformed.") from None
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in {"http", "https"} or not host:
        raise UnsafeWebhookUrl("A webhook URL must be an http(s) URL with a host.")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl("A webhook URL must not carry credentials.")
    port = port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    addresses = _resolve(host, port)
    if settings.WEBHOOK_SSRF_CHECKS and host not in {h.lower() for h in settings.WEBHOOK_ALLOWED_HOSTS}:
        if parts.scheme != "https":
            raise UnsafeWebhookUrl("A webhook URL must use https.")
        refused = [a for a in addresses if not _public(a)]
        if refused or not addresses:
            raise UnsafeWebhookUrl(f"The host {host!r} resolves to a non-public address ({refused[0]}).")
    return Target(parts.scheme, host, port, path, tuple(addresses))
