"""HTTP client for Mixpanel's GDPR API v3 (data retrievals and deletions).

This module is transport only: it builds requests, parses responses and turns every failure into one
``MixpanelError`` whose ``kind`` tells the caller what to do and whose ``permanent`` flag says whether
retrying can help. It imports nothing from Django so it can be tested against a plain local HTTP server;
rate limiting, retries, persistence and auditing belong to the caller (``on_call`` reports each attempt).

The contract it follows is ``/work/shared/MIXPANEL_GDPR_API.md``.

Nothing this module raises or reports carries a token, a distinct id or a download link: error messages
name the operation and the HTTP status only, because they end up in logs, task results and error trackers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import requests
import requests.auth

logger = logging.getLogger(__name__)

BASE_URLS: dict[str, str] = {
    "us": "https://mixpanel.com/api/app",
    "eu": "https://eu.mixpanel.com/api/app",
    "in": "https://in.mixpanel.com/api/app",
}

# Error kinds. They double as the ``outcome`` of a CallRecord, next to OK.
RATE_LIMITED = "rate_limited"
TRANSIENT = "transient"
CONFLICT = "conflict"
CREDENTIAL = "credential"
NOT_FOUND = "not_found"
PERMANENT = "permanent"
OK = "ok"

ERROR_KINDS = frozenset({RATE_LIMITED, TRANSIENT, CONFLICT, CREDENTIAL, NOT_FOUND, PERMANENT})
PERMANENT_KINDS = frozenset({CREDENTIAL, NOT_FOUND, PERMANENT})

COMPLIANCE_TYPES = frozenset({"GDPR", "CCPA"})
DISCLOSURE_TYPES = ("Data", "Categories", "Sources")

# Redirects followed by download(); a result link may bounce once or twice through a CDN, never more.
MAX_REDIRECTS = 3

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024

T = TypeVar("T")


def base_url_for(residency: str, override: str = "") -> str:
    """Return the API base URL for a project's data residency ("us", "eu" or "in").

    A non-empty ``override`` (a sandbox, a test server, a proxy) wins over the residency. An empty
    residency means the US default. Raises ValueError for an unknown residency or a malformed override.
    """
    override = override.strip()
    if override:
        parts = urlsplit(override)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base URL override must be an http(s) URL with a host")
        return override.rstrip("/")
    key = (residency or "us").strip().lower()
    try:
        return BASE_URLS[key]
    except KeyError:
        raise ValueError(f"unknown data residency {residency!r}") from None


# --- errors -------------------------------------------------------------------------------------------


class MixpanelError(Exception):
    """The one error type of this client.

    ``kind`` is one of RATE_LIMITED, TRANSIENT, CONFLICT, CREDENTIAL, NOT_FOUND, PERMANENT;
    ``permanent`` is True when retrying the same call cannot succeed (CREDENTIAL, NOT_FOUND, PERMANENT).
    ``retry_after`` is the server's Retry-After in seconds, when it sent one. For CONFLICT,
    ``conflicting_distinct_ids`` and ``conflicting_task_ids`` say which ids already have a deletion running
    (personal data: read them, never log them; they are not part of the message).
    """

    kind: str = PERMANENT

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        conflicting_distinct_ids: list[str] | None = None,
        conflicting_task_ids: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        if kind is not None:
            if kind not in ERROR_KINDS:
                raise ValueError(f"unknown error kind {kind!r}")
            self.kind = kind
        self.http_status = http_status
        self.retry_after = retry_after
        self.conflicting_distinct_ids: list[str] = list(conflicting_distinct_ids or [])
        self.conflicting_task_ids: list[str] = list(conflicting_task_ids or [])

    @property
    def permanent(self) -> bool:
        return self.kind in PERMANENT_KINDS


class RateLimited(MixpanelError):
    """HTTP 429: wait (``retry_after`` when given, else back off) and try again."""

    kind = RATE_LIMITED


class Transient(MixpanelError):
    """5xx, connection failure, timeout or a garbled 2xx body: retry with backoff."""

    kind = TRANSIENT


class Conflict(MixpanelError):
    """HTTP 409: a deletion already runs for some of the ids; the whole request was rejected."""

    kind = CONFLICT


class CredentialFailure(MixpanelError):
    """HTTP 401/403: the OAuth token is wrong, expired or lacks access; stop and alert staff."""

    kind = CREDENTIAL


class NotFound(MixpanelError):
    """HTTP 404: Mixpanel does not know the task (or the download link is gone)."""

    kind = NOT_FOUND


class Permanent(MixpanelError):
    """Any other failure that repeating the same call will not fix (400, an unexpected response shape)."""

    kind = PERMANENT


class _UnexpectedShape(Exception):
    """Raised by the response parsers; its text describes the shape, never the values."""


# --- value objects ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Where and as whom to call: the base URL, the project token (selects the project), the GDPR OAuth
    token (the credential) and our integration id. The tokens are left out of repr so that a logged or
    rendered Credentials object cannot leak them."""

    base_url: str
    project_token: str = field(repr=False)
    oauth_token: str = field(repr=False)
    integration_id: str


@dataclass(frozen=True)
class CallRecord:
    """One HTTP attempt, for the caller's ApiCall log. ``outcome`` is "ok" or an error kind."""

    operation: str
    http_status: int | None
    duration_ms: int
    outcome: str


@dataclass(frozen=True)
class RetrievalStatus:
    """A retrieval task's state. ``result_url`` is empty until SUCCESS.

    The link and the ids are kept out of repr: the link opens a data subject's export without
    authentication, and the ids are personal data."""

    status: str
    result_url: str = field(repr=False)
    distinct_ids: list[str] = field(repr=False)


@dataclass(frozen=True)
class DeletionStatus:
    """A deletion task's state. ``requesting_user`` is the email of the OAuth token's owner;
    ``date_requested`` is UTC (Mixpanel sends it without a zone) or None when absent or unreadable."""

    status: str
    requesting_user: str = field(repr=False)
    compliance_type: str
    project_id: int | None
    date_requested: datetime | None
    distinct_ids: list[str] = field(repr=False)
    tracking_id: str = ""


# --- auth hooks ---------------------------------------------------------------------------------------


class _BearerAuth(requests.auth.AuthBase):
    # Passing auth explicitly also stops requests from substituting ~/.netrc credentials for ours.
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(<hidden>)"


class _NoAuth(requests.auth.AuthBase):
    # A result link is fetched anonymously: strip any Authorization a shared session or ~/.netrc would add.
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


# --- the client ---------------------------------------------------------------------------------------


class MixpanelClient:
    """Calls Mixpanel's GDPR API v3 for one project.

    Every method makes exactly one HTTP request (``download`` may follow up to MAX_REDIRECTS redirects),
    with ``timeout`` seconds for connecting and for each read, and raises MixpanelError on any failure.
    ``on_call`` receives a CallRecord for every attempt, successful or not; an exception in it is logged
    and swallowed so that bookkeeping can never lose a task id Mixpanel has already issued.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: float,
        session: requests.Session | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
    ) -> None:
        if not timeout or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self._credentials = credentials
        self._base = credentials.base_url.rstrip("/")
        base = urlsplit(self._base)
        self._base_origin = (base.scheme.lower(), base.netloc.lower())
        self._timeout = timeout
        self._session = session if session is not None else requests.Session()
        self._on_call = on_call

    def __repr__(self) -> str:
        return f"MixpanelClient(base_url={self._base!r})"

    # -- operations ----------------------------------------------------------------------------------

    def create_retrieval(
        self,
        *,
        distinct_ids: Iterable[str],
        compliance_type: str = "GDPR",
        disclosure_type: str | None = None,
    ) -> str:
        """Start a data retrieval for ``distinct_ids`` and return its task id (the later tracking_id).

        ``disclosure_type`` (Data, Categories or Sources) is sent only when given; it matters for CCPA.
        """
        body: dict[str, Any] = {
            "distinct_ids": _id_list(distinct_ids),
            "compliance_type": _compliance_type(compliance_type),
        }
        if disclosure_type is not None:
            body["disclosure_type"] = _disclosure_type(disclosure_type)
        return self._call("create_retrieval", "POST", "/data-retrievals/v3.0/", body=body, parse=_parse_task_id)

    def retrieval_status(self, *, tracking_id: str) -> RetrievalStatus:
        """Look up a retrieval task. A NOT_FOUND status is returned, not raised; HTTP 404 raises NotFound."""
        path = f"/data-retrievals/v3.0/{_quote_id(tracking_id)}"
        return self._call("retrieval_status", "GET", path, parse=_parse_retrieval_status)

    def create_deletion(self, *, distinct_ids: Iterable[str], compliance_type: str = "GDPR") -> str:
        """Start a deletion for ``distinct_ids`` and return its task id.

        Raises Conflict (409) when a deletion already runs for some ids; nothing was created then.
        """
        body = {
            "distinct_ids": _id_list(distinct_ids),
            "compliance_type": _compliance_type(compliance_type),
        }
        return self._call("create_deletion", "POST", "/data-deletions/v3.0/", body=body, parse=_parse_task_id)

    def deletion_status(self, *, tracking_id: str) -> DeletionStatus:
        """Look up a deletion task. A NOT_FOUND status is returned, not raised; HTTP 404 raises NotFound."""
        path = f"/data-deletions/v3.0/{_quote_id(tracking_id)}"
        return self._call("deletion_status", "GET", path, parse=_parse_deletion_status)

    def cancel_deletion(self, *, tracking_id: str) -> None:
        """Cancel a deletion that has not started yet (PENDING or STAGING). Any 2xx counts as done."""
        path = f"/data-deletions/v3.0/{_quote_id(tracking_id)}"
        self._call("cancel_deletion", "DELETE", path, parse=None)

    def download(self, *, url: str, allowed_hosts: set[str], max_bytes: int) -> bytes:
        """Fetch a retrieval's result link and return its bytes.

        The request carries no Authorization or integration header. The link's host, and the host of
        every redirect, must be in ``allowed_hosts``; the scheme must be https, or exactly the scheme and
        host:port of this client's base URL (a local test server or proxy). At most MAX_REDIRECTS redirects
        are followed. A body over ``max_bytes`` stops the transfer with a Permanent error.

        One CallRecord ("download") covers the whole redirect chain.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        started = _now()
        try:
            body, status = self._download(url, _normalise_hosts(allowed_hosts), max_bytes)
        except MixpanelError as exc:
            self._record("download", exc.http_status, started, exc.kind)
            raise
        self._record("download", status, started, OK)
        return body

    # -- plumbing ------------------------------------------------------------------------------------

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        parse: Callable[[Any], T] | None,
        body: dict[str, Any] | None = None,
    ) -> T:
        started = _now()
        http_status: int | None = None
        try:
            response = self._send(operation, method, path, body)
            http_status = response.status_code
            if not 200 <= http_status < 300:
                raise _error_from_response(operation, response)
            result = None if parse is None else _parse_body(operation, response, parse)
        except MixpanelError as exc:
            self._record(operation, http_status, started, exc.kind)
            raise
        self._record(operation, http_status, started, OK)
        return result  # type: ignore[return-value]

    def _send(self, operation: str, method: str, path: str, body: dict[str, Any] | None) -> requests.Response:
        headers = {
            "Accept": "application/json",
            "X-Mixpanel-Integration-ID": self._credentials.integration_id,
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        failure: MixpanelError | None = None
        try:
            return self._session.request(
                method,
                self._base + path,
                params={"token": self._credentials.project_token},
                data=None if body is None else json.dumps(body).encode(),
                headers=headers,
                auth=_BearerAuth(self._credentials.oauth_token),
                timeout=self._timeout,
                # The API never redirects; following one would carry the token in the query string to
                # wherever it points. A 3xx is reported as a permanent error instead.
                allow_redirects=False,
            )
        # requests' own messages contain the URL and so the project token: never reuse their text, and
        # raise outside the except block so the original exception is not chained onto ours.
        except requests.Timeout:
            failure = Transient(f"{operation}: timed out")
        except requests.ConnectionError:
            failure = Transient(f"{operation}: connection failed")
        except requests.exceptions.ChunkedEncodingError:
            failure = Transient(f"{operation}: response cut off")
        except requests.RequestException as exc:
            failure = Permanent(f"{operation}: request could not be sent ({type(exc).__name__})")
        raise failure

    def _download(self, url: str, allowed: frozenset[str], max_bytes: int) -> tuple[bytes, int]:
        current = url
        previous_status: int | None = None
        for _hop in range(MAX_REDIRECTS + 1):
            self._check_download_url(current, allowed, previous_status)
            response = self._send_download(current)
            with response:
                status = response.status_code
                if status in _REDIRECT_STATUSES:
                    location = response.headers.get("Location", "").strip()
                    if not location:
                        raise Permanent("download: redirect without a location", http_status=status)
                    current = urljoin(current, location)
                    previous_status = status
                    continue
                if not 200 <= status < 300:
                    raise _download_error(status, response)
                return _read_capped(response, max_bytes), status
        raise Permanent(f"download: more than {MAX_REDIRECTS} redirects", http_status=previous_status)

    def _check_download_url(self, url: str, allowed: frozenset[str], http_status: int | None) -> None:
        # The link comes from a third party and may be rewritten by redirects: refuse anything that is not
        # an allowed host over https (or our own base URL's origin), so it cannot be used to reach
        # internal services.
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").rstrip(".")
            has_userinfo = parts.username is not None or parts.password is not None
        except ValueError:
            raise Permanent("download: malformed URL", http_status=http_status) from None
        scheme = parts.scheme.lower()
        scheme_ok = scheme == "https" or (scheme, parts.netloc.lower()) == self._base_origin
        if not (scheme_ok and host and host in allowed and not has_userinfo):
            what = "redirect" if http_status is not None else "URL"
            raise Permanent(f"download: {what} to a host or scheme that is not allowed", http_status=http_status)

    def _send_download(self, url: str) -> requests.Response:
        failure: MixpanelError | None = None
        try:
            return self._session.get(
                url,
                headers={"Accept": "*/*"},
                auth=_NoAuth(),
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
        # The link may be signed; as in _send, never reuse requests' message, which contains the URL.
        except requests.Timeout:
            failure = Transient("download: timed out")
        except requests.ConnectionError:
            failure = Transient("download: connection failed")
        except requests.RequestException as exc:
            failure = Permanent(f"download: request could not be sent ({type(exc).__name__})")
        raise failure

    def _record(self, operation: str, http_status: int | None, started: float, outcome: str) -> None:
        if self._on_call is None:
            return
        duration_ms = max(0, int((_now() - started) * 1000))
        try:
            self._on_call(CallRecord(operation, http_status, duration_ms, outcome))
        except Exception:
            logger.exception("mixpanel on_call hook failed for %s", operation)


# --- helpers ------------------------------------------------------------------------------------------


def _now() -> float:
    # Monotonic because wall time can jump during a call.
    return time.monotonic()


def _id_list(distinct_ids: Iterable[str]) -> list[str]:
    if isinstance(distinct_ids, str | bytes):
        raise TypeError("distinct_ids must be a list of strings, not a single string")
    ids = list(distinct_ids)
    if not ids:
        raise ValueError("distinct_ids must not be empty")
    if not all(isinstance(value, str) and value for value in ids):
        raise ValueError("distinct_ids must be non-empty strings")
    return ids


def _compliance_type(value: str) -> str:
    normalised = value.strip().upper()
    if normalised not in COMPLIANCE_TYPES:
        raise ValueError("compliance_type must be GDPR or CCPA")
    return normalised


def _disclosure_type(value: str) -> str:
    for allowed in DISCLOSURE_TYPES:
        if value.strip().lower() == allowed.lower():
            return allowed
    raise ValueError("disclosure_type must be Data, Categories or Sources")


def _quote_id(tracking_id: str) -> str:
    # Task ids are opaque; a "/" or "?" in one must not change the path or the query.
    tracking_id = str(tracking_id).strip()
    if not tracking_id:
        raise ValueError("tracking_id must not be empty")
    return quote(tracking_id, safe="")


def _normalise_hosts(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(h.strip().lower().rstrip(".") for h in hosts if h and h.strip())


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
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
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _json_or_none(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _error_from_response(operation: str, response: requests.Response) -> MixpanelError:
    status = response.status_code
    retry_after = _parse_retry_after(response.headers.get("Retry-After"))
    message = f"{operation}: HTTP {status}"
    if status == 429:
        return RateLimited(f"{message} (rate limited)", http_status=status, retry_after=retry_after)
    if status >= 500:
        return Transient(f"{message} (server error)", http_status=status, retry_after=retry_after)
    if status in (401, 403):
        return CredentialFailure(f"{message} (credential refused)", http_status=status)
    if status == 404:
        return NotFound(f"{message} (not found)", http_status=status)
    if status == 409:
        distinct_ids, task_ids = _conflicting_ids(_json_or_none(response))
        return Conflict(
            f"{message} (a deletion is already running for some ids)",
            http_status=status,
            conflicting_distinct_ids=distinct_ids,
            conflicting_task_ids=task_ids,
        )
    # Other 4xx (a payload Mixpanel rejects) and unexpected 1xx/3xx: the same call would fail again.
    return Permanent(f"{message} (rejected)", http_status=status)


def _download_error(status: int, response: requests.Response) -> MixpanelError:
    # No credentials are sent with a download, so 401/403 mean an expired or invalid link, not a bad
    # OAuth token: report them as PERMANENT so the caller does not mark the project's credential failing.
    retry_after = _parse_retry_after(response.headers.get("Retry-After"))
    message = f"download: HTTP {status}"
    if status == 429:
        return RateLimited(f"{message} (rate limited)", http_status=status, retry_after=retry_after)
    if status >= 500:
        return Transient(f"{message} (server error)", http_status=status, retry_after=retry_after)
    if status in (404, 410):
        return NotFound(f"{message} (link not found)", http_status=status)
    return Permanent(f"{message} (refused)", http_status=status)


def _conflicting_ids(payload: Any) -> tuple[list[str], list[str]]:
    # Seen in the wild: {"status": "error", "error": {"conflicting_distinct_ids": [...], ...}}.
    # Accept the lists at the top level too, and anything missing as empty.
    if not isinstance(payload, dict):
        return [], []
    error = payload.get("error")
    source = error if isinstance(error, dict) else payload
    return (
        _str_list(source.get("conflicting_distinct_ids")),
        _str_list(source.get("conflicting_task_ids")),
    )


def _read_capped(response: requests.Response, max_bytes: int) -> bytes:
    status = response.status_code
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise Permanent("download: body larger than the size limit", http_status=status)
    chunks: list[bytes] = []
    total = 0
    failure: MixpanelError | None = None
    try:
        # Counted after content decoding, so a compressed body cannot expand past the cap either.
        for chunk in response.iter_content(_CHUNK_BYTES):
            total += len(chunk)
            if total > max_bytes:
                failure = Permanent("download: body larger than the size limit", http_status=status)
                break
            chunks.append(chunk)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
        failure = Transient("download: transfer interrupted", http_status=status)
    except requests.RequestException as exc:
        failure = Permanent(f"download: transfer failed ({type(exc).__name__})", http_status=status)
    if failure is not None:
        raise failure
    return b"".join(chunks)


def _parse_body(operation: str, response: requests.Response, parse: Callable[[Any], T]) -> T:
    status = response.status_code
    try:
        payload = json.loads(response.content)
    except ValueError:
        # A cut-off or garbled 2xx body is most likely a proxy hiccup: let the caller retry. (For a
        # create this means the task may exist already; the caller's ambiguity handling covers it.)
        payload = None
        failure: MixpanelError = Transient(f"{operation}: HTTP {status} with a malformed JSON body", http_status=status)
    else:
        try:
            return parse(payload)
        except _UnexpectedShape as exc:
            # Valid JSON we do not understand will not improve on retry.
            failure = Permanent(
                f"{operation}: HTTP {status} with an unexpected response shape ({exc})",
                http_status=status,
            )
    raise failure


def _results(payload: Any) -> Any:
    if not isinstance(payload, dict) or "results" not in payload:
        raise _UnexpectedShape("no results")
    return payload["results"]


def _results_object(payload: Any) -> dict[str, Any]:
    results = _results(payload)
    if not isinstance(results, dict):
        raise _UnexpectedShape("results is not an object")
    return results


def _as_id(value: Any) -> str | None:
    # Task ids are opaque strings, but some responses send them as numbers.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in (_as_id(v) for v in value) if item is not None]


def _status(results: dict[str, Any]) -> str:
    status = results.get("status")
    if not isinstance(status, str) or not status.strip():
        raise _UnexpectedShape("no task status")
    return status.strip().upper()


def _parse_task_id(payload: Any) -> str:
    results = _results(payload)
    # Documented: {"results": {"task_id": ...}}; older prose: {"results": [{"tracking_id": ...}]}.
    if isinstance(results, dict):
        candidate = results.get("task_id", results.get("tracking_id"))
    elif isinstance(results, list) and results and isinstance(results[0], dict):
        candidate = results[0].get("tracking_id", results[0].get("task_id"))
    else:
        raise _UnexpectedShape("results is neither an object nor a list of jobs")
    task_id = _as_id(candidate)
    if task_id is None:
        raise _UnexpectedShape("no task id")
    return task_id


def _parse_retrieval_status(payload: Any) -> RetrievalStatus:
    results = _results_object(payload)
    # Real responses call the link "result"; the OpenAPI file calls it "results".
    link = results.get("result")
    if not isinstance(link, str) or not link.strip():
        link = results.get("results")
    result_url = link.strip() if isinstance(link, str) else ""
    return RetrievalStatus(
        status=_status(results),
        result_url=result_url,
        distinct_ids=_str_list(results.get("distinct_ids")),
    )


def _parse_deletion_status(payload: Any) -> DeletionStatus:
    results = _results_object(payload)
    requesting_user = results.get("requesting_user")
    compliance_type = results.get("compliance_type")
    return DeletionStatus(
        status=_status(results),
        requesting_user=requesting_user.strip() if isinstance(requesting_user, str) else "",
        compliance_type=compliance_type.strip().upper() if isinstance(compliance_type, str) else "",
        project_id=_as_int(results.get("project_id")),
        date_requested=_parse_datetime(results.get("date_requested")),
        distinct_ids=_str_list(results.get("distinct_ids")),
        tracking_id=_as_id(results.get("tracking_id")) or "",
    )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _parse_datetime(value: Any) -> datetime | None:
    # Mixpanel sends ISO time without a zone; the contract says to read it as UTC. A missing or
    # unreadable date is not worth failing a status poll over.
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
