"""Every API error as RFC 9457 problem details (``application/problem+json``).

``{"type", "title", "status", "detail", "errors": [{"field": "distinct_ids.3", "detail": "..."}]}``: a client
can show the message and point at the field. Unexpected exceptions are left to Django (a logged 500), so a
bug is never dressed up as the client's fault.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from gdpr_requests.requests.services import ServiceError
from gdpr_requests.requests.states import TransitionNotAllowed

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://privacy-request-manager.invalid/problems/"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"

    def __init__(self, detail: str, *, field: str = "") -> None:
        super().__init__(detail)
        self.field = field


class Unprocessable(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "unprocessable"


def _printable(value: Any) -> Any:
    """Error texts echo what the client sent; a lone surrogate in it would make the answer unencodable (a 500)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(item) for item in value]
    return value


def problem(status_code: int, title: str, detail: str, *, code: str, errors: list[dict[str, str]] | None = None):
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status_code, "detail": detail}
    if errors:
        body["errors"] = errors
    return body


def field_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested error detail into one entry per field path (``distinct_ids.3``)."""
    if isinstance(detail, dict):
        found = []
        for name, value in detail.items():
            path = prefix if name == "non_field_errors" else (f"{prefix}.{name}" if prefix else str(name))
            found.extend(field_errors(value, path))
        return found
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [{"field": prefix, "detail": str(item)} for item in detail]
        found = []
        for index, item in enumerate(detail):
            found.extend(field_errors(item, f"{prefix}.{index}" if prefix else str(index)))
        return found
    return [{"field": prefix, "detail": str(detail)}]


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError | TransitionNotAllowed):
        exc = Conflict(str(exc)) if isinstance(exc, TransitionNotAllowed) else exceptions.ValidationError(str(exc))
    elif isinstance(exc, RequestDataTooBig):
        exc = exceptions.APIException("The request body is too large.")
        exc.status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    response = exception_handler(exc, context)  # sets WWW-Authenticate and Retry-After
    if response is None:
        return None
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    code = getattr(exc, "default_code", "error")
    title = response.status_text if hasattr(response, "status_text") else "Error"
    if isinstance(exc, exceptions.ValidationError):
        errors = field_errors(exc.detail)
        fields = sorted({e["field"] for e in errors if e["field"]})
        detail = f"Invalid fields: {', '.join(fields)}." if fields else (errors[0]["detail"] if errors else "Invalid.")
        body = problem(response.status_code, "Invalid request", detail, code="invalid", errors=errors)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        errors = [{"field": exc.field, "detail": str(detail)}] if getattr(exc, "field", "") else None
        body = problem(response.status_code, str(title), str(detail), code=str(code), errors=errors)
    response.data = _printable(body)
    response.content_type = PROBLEM_CONTENT_TYPE
    return response
