"""Webhook endpoints, the outbox of deliveries, and sending them.

Every event becomes one WebhookDelivery row per subscribed endpoint, written in the transaction of the change
when the hook runs inside it (intake), else right after its commit (transitions); a task is queued after commit
with the row's id only. A worker claims the row with a conditional UPDATE, sends, records the attempt, and
either marks it delivered, schedules the next try (exponential backoff with jitter, for up to
RETRY_WINDOW, on timeouts, connection errors, 5xx and 429) or gives up (other 4xx, redirects, an address the
SSRF rules refuse, or the window is over). A sweep queues rows whose message was lost or whose retry is due.

Payloads carry references, statuses and dates: never the email, name or distinct ids.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import (
    DataSubjectRequest,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from gdpr_requests.models.webhooks import WEBHOOK_EVENTS
from gdpr_requests.requests import states
from gdpr_requests.requests.services import ServiceError
from gdpr_requests.webhooks import signing, transport
from gdpr_requests.webhooks.addresses import UnsafeWebhookUrl, check

logger = logging.getLogger("gdpr_requests.webhooks")

DELIVER_TASK = "gdpr_requests.tasks.deliver_webhook"
RETRY_WINDOW = timedelta(days=3)
BACKOFF_BASE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 6 * 3600.0
# A claim outlives the task's hard time limit, so two workers never send one row at the same time.
CLAIM_SECONDS = 240
# Retries this soon are queued with a countdown; later ones wait for the sweep (the broker holds no long ETAs).
COUNTDOWN_LIMIT_SECONDS = 300
SWEEP_BATCH = 500

# The request services' action names, as webhook event types.
TRANSITION_EVENTS = {
    "verify": "request.verified",
    "approve": "request.approved",
    "complete": "request.completed",
    "reject": "request.rejected",
    "cancel": "request.cancelled",
    "fail": "request.failed",
    "extend": "request.extended",
}


# --- Endpoints ------------------------------------------------------------------------------------------
def check_endpoint_events(events: Iterable[str]) -> list[str]:
    """The events, sorted and without repeats, or ServiceError (endpoint_create's check; forms call it too)."""
    chosen = sorted(set(events))
    unknown = [event for event in chosen if event not in WEBHOOK_EVENTS]
    if unknown:
        raise ServiceError(f"Unknown event {unknown[0]!r}: use {', '.join(WEBHOOK_EVENTS)}.")
    if not chosen:
        raise ServiceError("Subscribe the endpoint to at least one event.")
    return chosen


def check_endpoint_url(url: str) -> tuple[str, str]:
    """The URL and its host if the SSRF rules accept it, else ServiceError (endpoint_create's check; the admin's
    form calls it too, so a refusal is a form error; the service checks again when it saves)."""
    url = (url or "").strip()
    if len(url) > 2000:
        raise ServiceError("The URL is longer than 2000 characters.")
    try:
        return url, check(url).host
    except UnsafeWebhookUrl as exc:
        raise ServiceError(f"Webhook URL refused: {exc}") from None


def endpoint_create(*, url: str, events: Sequence[str], actor: Actor) -> WebhookEndpoint:
    """Add an endpoint with a new signing secret (read it from the returned object once: it is not shown again)."""
    (url, host), chosen = check_endpoint_url(url), check_endpoint_events(events)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(url=url, events=chosen, secret=signing.new_secret())
        audit_record(
            action="webhook.endpoint_added",
            actor=actor,
            payload={"endpoint_id": endpoint.pk, "host": host, "events": chosen},
        )
    return endpoint


def endpoint_disable(*, endpoint: WebhookEndpoint, actor: Actor) -> WebhookEndpoint:
    with transaction.atomic():
        now = timezone.now()
        if WebhookEndpoint.objects.filter(pk=endpoint.pk, is_active=True).update(is_active=False, disabled_at=now) != 1:
            raise ServiceError(f"Webhook {endpoint.pk} is already disabled.")
        audit_record(action="webhook.endpoint_disabled", actor=actor, payload={"endpoint_id": endpoint.pk})
    endpoint.is_active, endpoint.disabled_at = False, now
    return endpoint


def endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor: Actor) -> WebhookEndpoint:
    """A new signing secret, at once: deliveries from now on (retries included) are signed with it."""
    with transaction.atomic():
        endpoint.secret = signing.new_secret()
        endpoint.secret_rotated_at = timezone.now()
        endpoint.save(update_fields=["secret", "secret_rotated_at"])
        audit_record(action="webhook.secret_rotated", actor=actor, payload={"endpoint_id": endpoint.pk})
    return endpoint


# --- The outbox ------------------------------------------------------------------------------------------
def request_payload(dsr: DataSubjectRequest) -> dict[str, Any]:
    """What a webhook says about a request: no email, name or distinct ids."""

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "reference": dsr.reference,
        "external_id": dsr.external_id,
        "kind": dsr.kind,
        "regulation": dsr.regulation,
        "status": dsr.status,
        "channel": dsr.channel,
        "received_at": iso(dsr.received_at),
        "due_at": iso(dsr.due_at),
        "original_due_at": iso(dsr.original_due_at),
        "extended_at": iso(dsr.extended_at),
        "verified_at": iso(dsr.verified_at),
        "closed_at": iso(dsr.closed_at),
        "status_changed_at": iso(dsr.status_changed_at),
    }


def new_event_id() -> str:
    return f"msg_{secrets.token_hex(16)}"


def subscribed_endpoints(event_type: str) -> list[WebhookEndpoint]:
    """The active endpoints that take ``event_type``, with their events only: every intake and transition asks,
    and loading the whole row would decrypt each endpoint's signing secret (Fernet) for nothing."""
    return [e for e in WebhookEndpoint.objects.filter(is_active=True).only("pk", "events") if event_type in e.events]


def events_record(
    *,
    event_type: str,
    requests: Sequence[DataSubjectRequest],
    event_ids: Sequence[str] | None = None,
    endpoints: Sequence[WebhookEndpoint] | None = None,
) -> list[WebhookDelivery]:
    """Write one delivery per subscribed endpoint and request, and queue them once the transaction commits.

    ``event_ids`` (one per request) make the event idempotent: a second call with the same ids adds nothing
    (the overdue sweep relies on it). Without them each call is a new event.
    """
    endpoints = subscribed_endpoints(event_type) if endpoints is None else list(endpoints)
    if not endpoints or not requests:
        return []
    now = timezone.now()
    ids = list(event_ids) if event_ids is not None else [new_event_id() for _ in requests]
    rows = [
        WebhookDelivery(
            endpoint=endpoint,
            event_id=event_id,
            event_type=event_type,
            request_reference=dsr.reference,
            payload={"type": event_type, "timestamp": now.isoformat(), "data": request_payload(dsr)},
            next_attempt_at=now,
        )
        for dsr, event_id in zip(requests, ids, strict=True)
        for endpoint in endpoints
    ]
    WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=event_ids is not None)
    # With ignore_conflicts the ids of inserted rows are unknown: look them up by their unique pairs.
    pending = list(
        WebhookDelivery.objects.filter(
            endpoint__in=endpoints, event_id__in=ids, status=DeliveryStatus.PENDING, attempts=0
        ).values_list("pk", flat=True)
    )
    transaction.on_commit(lambda: _enqueue(pending))
    return rows


def _enqueue(delivery_ids: Sequence[int], countdown: float | None = None) -> None:
    for delivery_id in delivery_ids:
        try:
            current_app.signature(DELIVER_TASK, args=(delivery_id,)).apply_async(countdown=countdown)
        except Exception:  # the broker is down: the row stays pending and the sweep queues it again
            logger.warning("could not queue webhook delivery %s", delivery_id, exc_info=True)
            return


# --- Sending --------------------------------------------------------------------------------------------
def backoff_seconds(attempts: int) -> float:
    """Exponential from BACKOFF_BASE_SECONDS, capped, with full jitter over its upper half."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def delivery_attempt(*, delivery_id: int) -> str:
    """Send one delivery if it is due and unclaimed. Returns the outcome: succeeded, retry, failed or skipped."""
    now = timezone.now()
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
    )
    if not claimed:
        return "skipped"
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            status=DeliveryStatus.FAILED, claimed_until=None, last_error_class="EndpointDisabled"
        )
        return "failed"
    number = delivery.attempts + 1
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    headers = signing.headers(
        secret=endpoint.secret, message_id=delivery.event_id, timestamp=int(now.timestamp()), body=body
    )
    status_code: int | None
    try:
        sent = transport.post(url=endpoint.url, body=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
        outcome, status_code, duration, error_class = "succeeded", sent.status_code, sent.duration_ms, ""
    except transport.TransportError as exc:
        status_code, duration, error_class = exc.status_code, exc.duration_ms, exc.error_class
        give_up = exc.permanent or now - delivery.created_at >= RETRY_WINDOW
        outcome = "failed" if give_up else "retry"
    fields: dict[str, Any] = {
        "attempts": number,
        "claimed_until": None,
        "last_status_code": status_code,
        "last_duration_ms": duration,
        "last_error_class": error_class,
    }
    delay = 0.0
    if outcome == "succeeded":
        fields.update(status=DeliveryStatus.SUCCEEDED, delivered_at=timezone.now())
    elif outcome == "failed":
        fields.update(status=DeliveryStatus.FAILED)
    else:
        delay = backoff_seconds(number)
        fields.update(next_attempt_at=timezone.now() + timedelta(seconds=delay))
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery_id).update(**fields)
        WebhookAttempt.objects.create(
            delivery_id=delivery_id,
            number=number,
            started_at=now,
            status_code=status_code,
            duration_ms=duration,
            error_class=error_class,
            outcome=outcome,
        )
    log = logger.info if outcome == "succeeded" else logger.warning
    log(
        "webhook %s for %s to endpoint %s: %s",
        delivery.event_type,
        delivery.request_reference,
        endpoint.pk,
        outcome,
        extra={"reference": delivery.request_reference, "outcome": outcome, "error_class": error_class},
    )
    if outcome == "retry" and delay <= COUNTDOWN_LIMIT_SECONDS:
        _enqueue([delivery_id], countdown=delay)
    return outcome


def delivery_resend(*, delivery: WebhookDelivery, actor: Actor) -> WebhookDelivery:
    """Send a delivery again now (same webhook-id, so receivers can tell it is the same event)."""
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            # A fresh retry window: whoever presses "send again" wants it tried for the next three days.
            status=DeliveryStatus.PENDING,
            next_attempt_at=timezone.now(),
            claimed_until=None,
            created_at=timezone.now(),
        )
        audit_record(
            action="webhook.resent",
            actor=actor,
            request_reference=delivery.request_reference,
            payload={"delivery_id": delivery.pk, "endpoint_id": delivery.endpoint_id, "event": delivery.event_type},
        )
        transaction.on_commit(lambda: _enqueue([delivery.pk]))
    delivery.refresh_from_db()
    return delivery


def send_due() -> int:
    """Queue pending deliveries that are due and unclaimed: lost messages and retries the broker does not hold."""
    now = timezone.now()
    due = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        # A brand-new row has its own message in flight: leave it a minute.
        .filter(Q(attempts__gt=0) | Q(created_at__lt=now - timedelta(minutes=1)))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    _enqueue(due)
    return len(due)


def announce_overdue() -> int:
    """One ``request.overdue`` event per open request past its due date (per due date: an extension that is
    missed too is announced again). Returns how many requests were announced for the first time."""
    today = timezone.localdate()
    overdue = list(DataSubjectRequest.objects.filter(status__in=states.OPEN_STATES, due_at__lt=today))
    if not overdue:
        return 0
    ids = [f"overdue_{dsr.reference}_{dsr.due_at.isoformat()}" for dsr in overdue]
    with transaction.atomic():
        before = WebhookDelivery.objects.filter(event_id__in=ids).count()
        events_record(event_type="request.overdue", requests=overdue, event_ids=ids)
        return WebhookDelivery.objects.filter(event_id__in=ids).count() - before
