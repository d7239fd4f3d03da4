"""HTTP client for Mixpanel's Query API profile query: ``POST /api/query/engage`` (docs/identity.md §1).

Transport only, like ``client.py``: it builds the request, pages through the answer and turns every failure into
one ``QueryError`` whose ``kind`` says what the caller should do and whose ``permanent`` flag says whether
repeating the same call can help. It imports nothing from Django; the rate limit (60 queries an hour and 5 at
once per project, every page counting), retries and persistence belong to the caller, which gets a say before
every page after the first (``before_page``).

The request (docs/identity.md §1.1-1.4): the project id in the query string, HTTP Basic auth (a service
account's username and secret, or the project API secret as the username with an empty password), a
form-encoded body with ``where`` and ``output_properties``; then ``session_id`` and ``page`` + 1 until a page
holds fewer results than its ``page_size``.

Nothing this module raises carries a credential, an email or a distinct id: the ``where`` expression holds
emails, so error messages name the HTTP status or the shape that was wrong, never a body.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

# The Query API's hosts per data residency (docs/identity.md §1.1).
QUERY_HOSTS: dict[str, str] = {
    "us": "https://mixpanel.com",
    "eu": "https://eu.mixpanel.com",
    "in": "https://in.mixpanel.com",
}
ENGAGE_PATH = "/api/query/engage"
# The GDPR API's path below a base URL override; the Query API sits beside it on the same host.
GDPR_BASE_SUFFIX = "/api/app"
# Mixpanel documents 1000 profiles a page; a page that does not say its size is taken to have that one.
DEFAULT_PAGE_SIZE = 1000
# Far more than an email lookup can need: more pages than this means the expression matched something else.
MAX_PAGES = 10

# Error kinds.
RATE_LIMITED = "rate_limited"  # 429: wait, then try again
TRANSIENT = "transient"  # 5xx, timeout, connection failure: retry with backoff
CREDENTIAL = "credential"  # 401/403: the credential is wrong, expired or lacks access
MALFORMED = "malformed"  # a 2xx whose body is not the documented answer
PERMANENT = "permanent"  # any other 4xx, too many pages: the same call will fail again
ERROR_KINDS = frozenset({RATE_LIMITED, TRANSIENT, CREDENTIAL, MALFORMED, PERMANENT})
PERMANENT_KINDS = frozenset({CREDENTIAL, MALFORMED, PERMANENT})


class QueryError(Exception):
    """The one error type of this client. ``retry_after`` is the server's Retry-After in seconds, if sent."""

    def __init__(
        self, message: str, *, kind: str, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.http_status = http_status
        self.retry_after = retry_after

    @property
    def permanent(self) -> bool:
        return self.kind in PERMANENT_KINDS


def engage_url(residency: str, override: str = "") -> str:
    """The profile query's URL for a project: its residency's host, or beside a base URL override's GDPR API.

    An override ``http://host:port/<prefix>/api/app`` gives ``http://host:port/<prefix>/api/query/engage``
    (an override without the ``/api/app`` suffix is taken as the prefix itself). Raises ValueError for an
    unknown residency or a malformed override.
    """
    override = (override or "").strip()
    if override:
        parts = urlsplit(override)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base URL override must be an http(s) URL with a host")
        prefix = parts.path.rstrip("/")
        if prefix.endswith(GDPR_BASE_SUFFIX):
            prefix = prefix[: -len(GDPR_BASE_SUFFIX)]
        return f"{parts.scheme}://{parts.netloc}{prefix}{ENGAGE_PATH}"
    key = (residency or "us").strip().lower()
    try:
        return QUERY_HOSTS[key] + ENGAGE_PATH
    except KeyError:
        raise ValueError(f"unknown data residency {residency!r}") from None


@dataclass(frozen=True)
class QueryCredentials:
    """Where and as whom to query. With ``username`` empty, ``secret`` is the project API secret (Mixpanel
    retires that method on 2027-03-03, docs/identity.md §1.2). Secrets are kept out of repr."""

    url: str
    project_id: str
    username: str = field(repr=False)
    secret: str = field(repr=False)

    @property
    def uses_api_secret(self) -> bool:
        return not self.username

    def basic_auth(self) -> tuple[str, str]:
        return (self.username, self.secret) if self.username else (self.secret, "")


@dataclass(frozen=True)
class Profile:
    """One profile of an answer; its id and properties are personal data, kept out of repr."""

    distinct_id: str = field(repr=False)
    properties: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Page:
    profiles: list[Profile]
    page: int
    page_size: int
    session_id: str
    total: int | None


# --- the expression ------------------------------------------------------------------------------------


def quote_string(value: str) -> str:
    """``value`` as a string literal of Mixpanel's expression language: backslashes and quotes escaped, and
    line breaks too, so that no input can end the literal and add a clause of its own."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def where_any(*, properties: Sequence[str], values: Iterable[str]) -> str:
    """``properties["P"] == "V"`` for every property and value, joined with ``or`` (duplicates dropped).

    ``==`` is exact and case-sensitive (docs/identity.md §1.3): callers pass each variant they want matched.
    """
    values = list(dict.fromkeys(values))
    names = list(dict.fromkeys(properties))
    if not values or not names:
        raise ValueError("a profile query needs at least one property and one value")
    return " or ".join(
        f"properties[{quote_string(name)}] == {quote_string(value)}" for name in names for value in values
    )


# --- calls ---------------------------------------------------------------------------------------------


def query_page(
    *,
    credentials: QueryCredentials,
    where: str,
    output_properties: Sequence[str] = (),
    page: int = 0,
    session_id: str = "",
    timeout: float,
    session: requests.Session | None = None,
) -> Page:
    """One page of profiles matching ``where``. Page 0 opens a query; later pages need its ``session_id``."""
    if not timeout or timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    if page > 0 and not session_id:
        raise ValueError("pages after the first need the session_id of the first")
    form: dict[str, str] = {"where": where}
    if output_properties:
        form["output_properties"] = json.dumps(list(output_properties))
    if page > 0:
        form["session_id"] = session_id
        form["page"] = str(page)
    http = session if session is not None else requests.Session()
    try:
        response = http.post(
            credentials.url,
            params={"project_id": credentials.project_id},
            data=form,
            auth=credentials.basic_auth(),
            headers={"Accept": "application/json"},
            timeout=(timeout, timeout),
            allow_redirects=False,
        )
    except requests.Timeout:
        raise QueryError("profile query timed out", kind=TRANSIENT) from None
    except requests.RequestException as exc:
        raise QueryError(f"profile query failed to connect ({type(exc).__name__})", kind=TRANSIENT) from None
    finally:
        if session is None:
            http.close()
    status = response.status_code
    if status in (401, 403):
        raise QueryError(f"profile query refused the credential (HTTP {status})", kind=CREDENTIAL, http_status=status)
    if status == 429:
        raise QueryError(
            "profile query rate limited (HTTP 429)",
            kind=RATE_LIMITED,
            http_status=status,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        raise QueryError(f"profile query server error (HTTP {status})", kind=TRANSIENT, http_status=status)
    if not 200 <= status < 300:
        raise QueryError(f"profile query rejected (HTTP {status})", kind=PERMANENT, http_status=status)
    try:
        return _parse_page(response.content)
    except _Shape as exc:
        raise QueryError(f"profile query answer is malformed: {exc}", kind=MALFORMED, http_status=status) from None


def query_profiles(
    *,
    credentials: QueryCredentials,
    where: str,
    output_properties: Sequence[str] = (),
    timeout: float,
    session: requests.Session | None = None,
    before_page: Callable[[int], None] | None = None,
    max_pages: int = MAX_PAGES,
) -> tuple[list[Profile], int]:
    """Every profile matching ``where`` and the number of pages (queries) it took.

    Pages follow until one holds fewer results than its page_size. ``before_page(n)`` runs before page n ≥ 1
    (each page is a query against the hour's budget: it may raise to stop). More than ``max_pages`` pages is a
    PERMANENT error: an email lookup never needs that many.
    """
    own = session is None
    http = session if session is not None else requests.Session()
    try:
        first = query_page(
            credentials=credentials,
            where=where,
            output_properties=output_properties,
            timeout=timeout,
            session=http,
        )
        profiles = list(first.profiles)
        pages, last = 1, first
        while len(last.profiles) >= last.page_size > 0:
            if pages >= max_pages:
                raise QueryError(f"profile query needs more than {max_pages} pages", kind=PERMANENT)
            if not first.session_id:
                raise QueryError("profile query answer is malformed: a full page without session_id", kind=MALFORMED)
            if before_page is not None:
                before_page(pages)
            last = query_page(
                credentials=credentials,
                where=where,
                output_properties=output_properties,
                page=last.page + 1,
                session_id=first.session_id,
                timeout=timeout,
                session=http,
            )
            pages += 1
            profiles.extend(last.profiles)
        return profiles, pages
    finally:
        if own:
            http.close()


# --- parsing -------------------------------------------------------------------------------------------


class _Shape(Exception):
    """Raised by the parser; its text describes the shape, never the values."""


def _parse_page(content: bytes) -> Page:
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise _Shape("not JSON") from None
    if not isinstance(body, dict):
        raise _Shape("not a JSON object")
    if body.get("status", "ok") != "ok":
        raise _Shape("status is not ok")
    results = body.get("results")
    if not isinstance(results, list):
        raise _Shape("results is not a list")
    profiles = []
    for item in results:
        if not isinstance(item, dict):
            raise _Shape("a result is not an object")
        distinct_id = item.get("$distinct_id")
        # The documented example types it as an integer; in practice ids are strings (§1.6).
        if isinstance(distinct_id, bool) or not isinstance(distinct_id, str | int) or distinct_id == "":
            raise _Shape("a result has no $distinct_id")
        properties = item.get("$properties", {})
        if not isinstance(properties, dict):
            raise _Shape("a result's $properties is not an object")
        profiles.append(Profile(distinct_id=str(distinct_id), properties=properties))
    page = _int(body.get("page", 0), "page")
    page_size = _int(body.get("page_size", DEFAULT_PAGE_SIZE), "page_size")
    total = body.get("total")
    session_id = body.get("session_id") or ""
    if not isinstance(session_id, str | int):
        raise _Shape("session_id is not a string")
    return Page(
        profiles=profiles,
        page=page,
        page_size=page_size,
        session_id=str(session_id),
        total=total if isinstance(total, int) and not isinstance(total, bool) else None,
    )


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Shape(f"{name} is not a whole number")
    return value


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
