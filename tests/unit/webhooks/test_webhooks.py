"""Webhooks out: signed per Standard Webhooks, delivered from the outbox with retries, and SSRF-safe."""

from __future__ import annotations

import json
import logging
import socket
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from gdpr_requests.audit.chain import Actor
from gdpr_requests.models import AuditEvent, DataSubjectRequest, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from gdpr_requests.requests.services import ServiceError, request_create, request_extend, request_record_identity
from gdpr_requests.webhooks import services
from gdpr_requests.webhooks.addresses import UnsafeWebhookUrl, check
from gdpr_requests.webhooks.tasks import announce_overdue_requests, send_due_webhooks
from tests.unit.api.api_support import client_for, make_key, new_request_body
from tests.unit.management.cli_support import refused, run, run_json

pytestmark = pytest.mark.django_db

ALL_EVENTS = ["request.created", "request.verified", "request.cancelled", "request.extended", "request.overdue"]


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    # The production rules, with the test receiver's host let through as WEBHOOK_ALLOWED_HOSTS allows.
    settings.WEBHOOK_SSRF_CHECKS = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_TIMEOUT_SECONDS = 1.0


def add_endpoint(url: str, events=ALL_EVENTS) -> dict:
    args = ["webhook", "add", "--url", url, "--json"]
    for event in events:
        args += ["--event", event]
    return run_json(*args)


def make_due() -> None:
    """Time passes: every scheduled retry is due now."""
    WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).update(next_attempt_at=timezone.now())


def test_add_prints_the_secret_once_and_stores_it_encrypted():
    made = add_endpoint("https://hooks.example.test/x".replace("hooks.example.test", "127.0.0.1"))
    assert made["secret"].startswith("whsec_")
    assert "secret" not in run_json("webhook", "list", "--json")[0]
    assert made["secret"] not in run("webhook", "list")[0]
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM gdpr_requests_webhookendpoint")
        stored = cursor.fetchone()[0]
    assert made["secret"] not in stored and stored.startswith("gAAAA")  # a Fernet token
    rotated = run_json("webhook", "rotate-secret", str(made["id"]), "--json")
    assert rotated["secret"] != made["secret"]
    run("webhook", "disable", str(made["id"]))
    assert not WebhookEndpoint.objects.get(pk=made["id"]).is_active
    assert refused("webhook", "disable", str(made["id"]))[0] == f"Webhook {made['id']} is already disabled."
    actions = list(AuditEvent.objects.filter(action__startswith="webhook.").values_list("action", flat=True))
    assert actions == ["webhook.endpoint_added", "webhook.secret_rotated", "webhook.endpoint_disabled"]


def test_a_loopback_receiver_verifies_every_event_with_standardwebhooks(
    receiver, eager_celery, django_capture_on_commit_callbacks
):
    secret = add_endpoint(receiver.url)["secret"]
    client = client_for(make_key()["key"])
    with django_capture_on_commit_callbacks(execute=True):
        reference = client.post("/api/v1/requests/", new_request_body(external_id="crm-7"), format="json").json()[
            "reference"
        ]
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/api/v1/requests/{reference}/cancel/")
    assert len(receiver.received) == 2
    verifier = Webhook(secret)
    events = [verifier.verify(body, headers) for headers, body in receiver.received]
    assert [e["type"] for e in events] == ["request.created", "request.cancelled"]
    data = events[1]["data"]
    assert (data["reference"], data["external_id"], data["status"]) == (reference, "crm-7", "cancelled")
    assert set(data) == {
        "reference", "external_id", "kind", "regulation", "status", "channel", "received_at", "due_at",
        "original_due_at", "extended_at", "verified_at", "closed_at", "status_changed_at",
    }  # fmt: skip
    headers = receiver.received[0][0]
    assert headers["webhook-signature"].startswith("v1,") and headers["webhook-id"].startswith("msg_")
    tampered = receiver.received[0][1].replace(b"deletion", b"access")
    with pytest.raises(Exception, match="No matching signature"):
        verifier.verify(tampered, headers)


def test_a_receiver_failing_twice_then_recovering_gets_each_event_once_as_success(
    receiver, eager_celery, django_capture_on_commit_callbacks, system_actor
):
    add_endpoint(receiver.url)
    receiver.script = [503, 503]
    with django_capture_on_commit_callbacks(execute=True):
        dsr = request_create(kind="deletion", regulation="gdpr", email="s@example.com", actor=system_actor)
    for _ in range(4):
        make_due()
        send_due_webhooks.delay()
    with django_capture_on_commit_callbacks(execute=True):
        request_record_identity(request=dsr, how="passport seen", actor=system_actor)
    make_due()
    send_due_webhooks.delay()
    deliveries = list(WebhookDelivery.objects.order_by("id"))
    assert [(d.event_type, d.status) for d in deliveries] == [
        ("request.created", "succeeded"),
        ("request.verified", "succeeded"),
    ]
    created = deliveries[0]
    outcomes = list(created.attempt_log.values_list("outcome", "status_code"))
    assert outcomes == [("retry", 503), ("retry", 503), ("succeeded", 200)]
    # The receiver saw the created event three times under one webhook-id, and every event once as success.
    ids = [headers["webhook-id"] for headers, _ in receiver.received]
    assert ids.count(created.event_id) == 3 and ids.count(deliveries[1].event_id) == 1
    successes = WebhookDelivery.objects.filter(status="succeeded").values_list("event_id", flat=True)
    assert sorted(successes) == sorted({created.event_id, deliveries[1].event_id})


@pytest.mark.parametrize(
    ("script", "outcome"), [([410], "failed"), ([400], "failed"), ([429], "retry"), ([500], "retry"), ([302], "failed")]
)
def test_which_answers_are_retried(receiver, script, outcome, system_actor):
    add_endpoint(receiver.url)
    receiver.script = list(script)
    receiver.redirect_to = receiver.url + "/elsewhere" if script == [302] else ""
    request_create(kind="access", regulation="ccpa", email="s@example.com", actor=system_actor)
    delivery = WebhookDelivery.objects.get()
    assert services.delivery_attempt(delivery_id=delivery.pk) == outcome
    assert len(receiver.received) == 1  # a redirect is not followed
    delivery.refresh_from_db()
    assert delivery.status == ("failed" if outcome == "failed" else "pending")
    assert delivery.last_status_code == script[0] and delivery.last_error_class == f"HTTP {script[0]}"


def test_a_timeout_is_retried_with_backoff_and_given_up_after_three_days(receiver, system_actor, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    add_endpoint(receiver.url)
    receiver.delay = 1.0
    request_create(kind="access", regulation="gdpr", email="s@example.com", actor=system_actor)
    delivery = WebhookDelivery.objects.get()
    assert services.delivery_attempt(delivery_id=delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.last_error_class == "ReadTimeoutError" and delivery.last_status_code is None
    assert delivery.next_attempt_at > timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now(), created_at=timezone.now() - timedelta(days=3, minutes=1)
    )
    assert services.delivery_attempt(delivery_id=delivery.pk) == "failed"


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    first, fifth = services.backoff_seconds(1), services.backoff_seconds(5)
    assert 5 <= first <= 10 and 80 <= fifth <= 160
    assert services.BACKOFF_MAX_SECONDS / 2 <= services.backoff_seconds(40) <= services.BACKOFF_MAX_SECONDS
    assert len({services.backoff_seconds(3) for _ in range(20)}) > 1


def test_a_claimed_or_finished_delivery_is_not_sent_twice(receiver, system_actor):
    add_endpoint(receiver.url)
    request_create(kind="access", regulation="gdpr", email="s@example.com", actor=system_actor)
    delivery = WebhookDelivery.objects.get()
    assert services.delivery_attempt(delivery_id=delivery.pk) == "succeeded"
    assert services.delivery_attempt(delivery_id=delivery.pk) == "skipped"
    assert len(receiver.received) == 1


def test_the_sweep_requeues_a_delivery_whose_message_was_lost(receiver, eager_celery, system_actor):
    add_endpoint(receiver.url)
    request_create(kind="access", regulation="gdpr", email="s@example.com", actor=system_actor)  # no on_commit run
    assert receiver.received == []
    send_due_webhooks.delay()
    assert receiver.received == []  # a fresh row's own message may still be on its way
    WebhookDelivery.objects.update(created_at=timezone.now() - timedelta(minutes=2))
    send_due_webhooks.delay()
    assert len(receiver.received) == 1 and WebhookDelivery.objects.get().status == "succeeded"


def test_send_again_resends_with_the_same_id(receiver, eager_celery, system_actor, django_capture_on_commit_callbacks):
    add_endpoint(receiver.url)
    request_create(kind="access", regulation="gdpr", email="s@example.com", actor=system_actor)
    delivery = WebhookDelivery.objects.get()
    services.delivery_attempt(delivery_id=delivery.pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.delivery_resend(delivery=delivery, actor=system_actor)
    assert [h["webhook-id"] for h, _ in receiver.received] == [delivery.event_id] * 2
    assert delivery.attempt_log.count() == 2


def test_only_subscribed_events_and_active_endpoints_get_deliveries(receiver, system_actor):
    add_endpoint(receiver.url, events=["request.cancelled"])
    disabled = add_endpoint(receiver.url)
    run("webhook", "disable", str(disabled["id"]))
    dsr = request_create(kind="access", regulation="gdpr", email="s@example.com", actor=system_actor)
    assert not WebhookDelivery.objects.exists()
    request_extend(request=dsr, reason="complex", actor=system_actor)
    assert not WebhookDelivery.objects.exists()


def test_overdue_requests_are_announced_once_per_due_date(receiver, system_actor):
    add_endpoint(receiver.url)
    dsr = request_create(kind="access", regulation="gdpr", email="s@example.com", actor=system_actor)
    WebhookDelivery.objects.all().delete()
    DataSubjectRequest.objects.filter(pk=dsr.pk).update(due_at=timezone.localdate() - timedelta(days=1))
    assert services.announce_overdue() == 1
    announce_overdue_requests()  # the beat task, run again: nothing new
    overdue = WebhookDelivery.objects.get(event_type="request.overdue")
    assert overdue.request_reference == dsr.reference
    assert services.announce_overdue() == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # not https
        "https://10.1.2.3/x",
        "https://192.168.0.10/x",
        "https://127.0.0.2/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://[fd00:ec2::254]/x",
        "https://100.64.0.1/x",
        "https://0.0.0.0/x",
        "https://user:pw@93.184.216.34/x",
        "ftp://93.184.216.34/x",
        "https://[bad/x",
    ],
)
def test_private_and_unsafe_urls_are_refused_in_production(url):
    with pytest.raises(UnsafeWebhookUrl):
        check(url)
    message, _ = refused("webhook", "add", "--url", url, "--event", "request.created")
    assert message.startswith("Webhook URL refused")


def test_a_public_https_address_is_accepted():
    assert check("https://93.184.216.34:8443/hook?x=1").addresses == ("93.184.216.34",)


def test_the_address_is_checked_again_at_connect_time(receiver, system_actor, monkeypatch, settings):
    # Saved while the host resolved to a public address; by delivery time it resolves to loopback (rebinding).
    settings.WEBHOOK_ALLOWED_HOSTS = []
    answers = iter(["93.184.216.34", "127.0.0.1"])
    real = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host == "rebind.example.test":
            address = next(answers, "127.0.0.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    add_endpoint("https://rebind.example.test/hook")
    request_create(kind="access", regulation="gdpr", email="s@example.com", actor=system_actor)
    delivery = WebhookDelivery.objects.get()
    assert services.delivery_attempt(delivery_id=delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.last_error_class == "UnsafeWebhookUrl" and receiver.received == []


def test_unknown_events_are_refused():
    with pytest.raises(ServiceError, match="Unknown event"):
        services.endpoint_create(url="http://127.0.0.1/x", events=["request.exploded"], actor=Actor.system())


CANARY_EMAIL = "canary.person@canary-mail.example"
CANARY_NAME = "Canaryname Personsson"
CANARY_ID = "canary-distinct-id-0451"


def test_canary_no_personal_data_in_logs_webhook_payloads_or_the_trail(
    receiver, eager_celery, django_capture_on_commit_callbacks, caplog
):
    caplog.set_level(logging.DEBUG)
    add_endpoint(receiver.url)
    receiver.script = [500]
    client = client_for(make_key()["key"])
    body = new_request_body(email=CANARY_EMAIL, name=CANARY_NAME, distinct_ids=[CANARY_ID], external_id="c1")
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post("/api/v1/requests/", body, format="json", HTTP_IDEMPOTENCY_KEY="canary")
        reference = created.json()["reference"]
        client.post("/api/v1/requests/", {**body, "email": "bad"}, format="json")
        client.post(f"/api/v1/requests/{reference}/cancel/")
    make_due()
    send_due_webhooks.delay()
    seen = [
        created.content.decode(),
        client.get(f"/api/v1/requests/{reference}/").content.decode(),
        json.dumps(list(WebhookDelivery.objects.values_list("payload", flat=True))),
        *(body.decode() for _, body in receiver.received),
        json.dumps(list(AuditEvent.objects.values_list("payload", "actor_label"))),
        caplog.text,
        *(json.dumps(record.__dict__, default=str) for record in caplog.records),
    ]
    assert len(receiver.received) >= 3 and "webhook request.created" in caplog.text
    for text in seen:
        for canary in (CANARY_EMAIL, CANARY_NAME, CANARY_ID, "canary-mail"):
            assert canary not in text


def test_the_beat_tasks_and_the_delivery_task_are_registered_under_their_pinned_names(settings):
    from compliance.celery import app

    names = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    ours = {
        "gdpr_requests.tasks.send_due_webhooks",
        "gdpr_requests.tasks.announce_overdue_requests",
        "gdpr_requests.tasks.purge_idempotency_records",
    }
    assert ours <= names
    assert {*ours, services.DELIVER_TASK} <= set(app.tasks)


@pytest.mark.parametrize(
    ("action", "event_type"),
    [
        ("verify", "request.verified"),
        ("approve", "request.approved"),
        ("complete", "request.completed"),
        ("reject", "request.rejected"),
        ("cancel", "request.cancelled"),
        ("fail", "request.failed"),
        ("extend", "request.extended"),
    ],
)
def test_each_transition_the_services_announce_becomes_its_event(receiver, system_actor, action, event_type):
    from gdpr_requests.models.webhooks import WEBHOOK_EVENTS
    from gdpr_requests.webhooks import hooks

    add_endpoint(receiver.url, events=list(WEBHOOK_EVENTS))
    dsr = request_create(kind="access", regulation="gdpr", email="s@example.com", actor=system_actor)
    hooks.record_transitions([dsr.pk], action, "whatever")
    hooks.record_transitions([dsr.pk], "hold", "on_hold")  # not an event
    assert set(WebhookDelivery.objects.values_list("event_type", flat=True)) == {"request.created", event_type}


def test_production_turns_the_ssrf_checks_on_whatever_the_environment_says(production_env):
    """Settings read in a production subprocess: WEBHOOK_SSRF_CHECKS=false cannot switch them off."""
    from tests.unit.ops.test_ops_settings import manage

    production_env["WEBHOOK_SSRF_CHECKS"] = "false"
    code = "from django.conf import settings; print(settings.WEBHOOK_SSRF_CHECKS, settings.WEBHOOK_ALLOWED_HOSTS)"
    result = manage(production_env, "shell", "-c", code)
    assert result.stdout.strip().splitlines()[-1] == "True []", result.stderr
