"""The webhook Mixpanel's cohort sync posts to (docs/cohorts.md): one plain view, answered in Mixpanel's shape.

Order of checks, cheapest and least revealing first: the intake (404), the Basic credentials (401, the same
whichever part is wrong; 429 after too many failures in a minute), the declared body size (413, nothing read),
the body (400), the project (403). Mixpanel pauses the sync on 400/401/403/404 and emails whoever set it up; a
transient database failure gets 503, which it retries, but a value the database refuses (DataError) gets 400,
since a retry would fail the same way. ``success`` is sent only after the message's requests are committed.
"""

from __future__ import annotations

import base64
import binascii
import logging

from django.conf import settings
from django.db import DatabaseError, DataError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from gdpr_requests.cohorts import services
from gdpr_requests.cohorts.messages import MessageRefused, failure_body, parse_message, success_body
from gdpr_requests.models import CohortIntake

logger = logging.getLogger("gdpr_requests.cohorts")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


def max_body_bytes() -> int:
    return int(getattr(settings, "COHORT_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))


def _failure(status: int, message: str, action: str | None = None) -> JsonResponse:
    response = JsonResponse(failure_body(action, message, status), status=status)
    response["Cache-Control"] = "no-store"
    if status == 401:
        response["WWW-Authenticate"] = 'Basic realm="cohort sync", charset="UTF-8"'
    return response


def _basic_credentials(request: HttpRequest) -> tuple[str, str] | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep or any(ord(ch) < 32 for ch in decoded):
        return None
    return username, password


def _declared_length(request: HttpRequest) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None


@csrf_exempt
def cohort_webhook(request: HttpRequest, public_id: str) -> JsonResponse:
    if request.method != "POST":
        response = _failure(405, "Only POST is accepted.")
        response["Allow"] = "POST"
        return response
    intake = CohortIntake.objects.select_related("project").filter(public_id=public_id, is_active=True).first()
    if intake is None:
        return _failure(404, "No active cohort intake at this address.")
    credentials = _basic_credentials(request)
    throttled = services.cohort_auth_throttled(intake=intake)
    if credentials is None or not services.cohort_credentials_valid(
        intake=intake, username=credentials[0], password=credentials[1], slow_check=not throttled
    ):
        services.cohort_intake_record_auth_failure(intake=intake)
        if throttled:
            # Guessing costs a password hash each time: after COHORT_AUTH_FAILURES_PER_MINUTE, only a password
            # already checked gets in until the minute is over. Mixpanel retries a 429.
            response = _failure(429, "Too many failed authentications; try again in a minute.")
            response["Retry-After"] = "60"
            return response
        return _failure(401, "Authentication failed.")
    limit = max_body_bytes()
    length = _declared_length(request)
    if length is None:
        return _failure(400, "The Content-Length header is not a number.")
    if length > limit:
        # Refused unread: the connection cannot carry another request.
        response = _failure(413, f"The body is larger than {limit} bytes.")
        response["Connection"] = "close"
        return response
    # Read from the stream, not request.body: Django's DATA_UPLOAD_MAX_MEMORY_SIZE follows the portal's limit.
    body = request.read(limit + 1)
    if len(body) > limit:
        return _failure(413, f"The body is larger than {limit} bytes.")
    try:
        message = parse_message(body)
    except MessageRefused as refused:
        return _failure(refused.status, refused.message, refused.action)
    try:
        outcome = services.cohort_sync_receive(intake=intake, message=message)
    except MessageRefused as refused:
        return _failure(refused.status, refused.message, refused.action)
    except DataError as exc:
        # A value the database refuses (out of range, NUL in text) fails the same way on every retry: a 503
        # would have Mixpanel retry it forever; a 400 pauses the sync and tells whoever set it up.
        logger.warning("cohort intake %s: message refused by the database (%s)", intake.pk, type(exc).__name__)
        return _failure(400, "The message holds a value that cannot be stored.", message.action)
    except DatabaseError as exc:
        logger.warning("cohort intake %s: message not stored (%s); Mixpanel will retry", intake.pk, type(exc).__name__)
        return _failure(503, "The message could not be stored now; try again.", message.action)
    logger.info(
        "cohort intake %s: %s page %s, %d received, %d created, %d duplicates, %d refused%s",
        intake.pk,
        message.action,
        message.page_count,
        len(message.members),
        outcome.created,
        outcome.duplicates,
        outcome.refused,
        " (repeated)" if outcome.repeated else "",
    )
    return JsonResponse(success_body(message.action))
