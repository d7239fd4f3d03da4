"""The admin pages for API keys and webhooks: create shows the secret once, actions call the services,
and only superusers get in."""

from __future__ import annotations

import socket

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.urls import reverse

from gdpr_requests.models import ApiKey, AuditEvent, WebhookDelivery, WebhookEndpoint
from gdpr_requests.requests.services import request_create
from gdpr_requests.webhooks import services as webhook_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@staff.example", "pw-123456789"))
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_adding_a_key_in_the_admin_shows_it_once_and_revoking_works(admin_client):
    response = admin_client.post(
        reverse("admin:gdpr_requests_apikey_add"), {"name": "siem", "scopes": ["audit:read"]}, follow=True
    )
    assert response.status_code == 200
    api_key = ApiKey.objects.get(name="siem")
    shown = [m for m in messages_of(response) if "shown this once" in m]
    assert len(shown) == 1 and f"dsr_{api_key.prefix}_" in shown[0]
    changelist = admin_client.get(reverse("admin:gdpr_requests_apikey_changelist"))
    assert b"siem" in changelist.content and b"Last used" in changelist.content
    admin_client.post(
        reverse("admin:gdpr_requests_apikey_changelist"), {"action": "revoke", "_selected_action": [api_key.pk]}
    )
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


def test_webhook_admin_adds_endpoints_lists_attempts_and_sends_again(admin_client, settings, system_actor):
    settings.WEBHOOK_SSRF_CHECKS = False
    added = admin_client.post(
        reverse("admin:gdpr_requests_webhookendpoint_add"),
        {"url": "http://127.0.0.1:9/x", "events": ["request.created"]},
        follow=True,
    )
    endpoint = WebhookEndpoint.objects.get()
    assert any(endpoint.secret in m for m in messages_of(added))
    request_create(kind="access", regulation="gdpr", email="s@example.com", actor=system_actor)
    delivery = WebhookDelivery.objects.get()
    assert webhook_services.delivery_attempt(delivery_id=delivery.pk) == "retry"  # nothing listens on port 9
    page = admin_client.get(reverse("admin:gdpr_requests_webhookdelivery_change", args=[delivery.pk]))
    assert page.status_code == 200 and b"NewConnectionError" in page.content
    admin_client.post(
        reverse("admin:gdpr_requests_webhookdelivery_changelist"),
        {"action": "send_again", "_selected_action": [delivery.pk]},
    )
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.claimed_until is None


def test_staff_without_superuser_cannot_see_keys_or_webhooks(client, staff_user):
    client.force_login(staff_user)
    for name in ("apikey", "webhookendpoint", "webhookdelivery"):
        assert client.get(reverse(f"admin:gdpr_requests_{name}_changelist")).status_code == 403


@pytest.fixture
def production_ssrf(settings):
    # What production enforces (compliance/settings.py turns the checks on whatever the environment says).
    settings.WEBHOOK_SSRF_CHECKS = True
    settings.WEBHOOK_ALLOWED_HOSTS = []


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("https://10.0.0.1/x", "resolves to a non-public address"),
        ("https://169.254.169.254/latest/meta-data", "resolves to a non-public address"),
        ("http://93.184.216.34/x", "must use https"),
    ],
    ids=["private", "metadata", "plain-http"],
)
def test_a_refused_webhook_url_is_a_form_error_and_nothing_is_added_or_logged(
    admin_client, production_ssrf, url, error
):
    response = admin_client.post(
        reverse("admin:gdpr_requests_webhookendpoint_add"), {"url": url, "events": ["request.created"]}
    )
    assert response.status_code == 200  # the form again, with what was typed
    page = response.content.decode()
    assert "Webhook URL refused" in page and error in page
    assert response.context["adminform"].form.errors["url"]
    assert "added successfully" not in page
    assert messages_of(response) == []
    assert not WebhookEndpoint.objects.exists()
    assert not LogEntry.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="webhook.").exists()


def test_a_webhook_url_refused_between_the_forms_check_and_the_save_is_not_reported_as_added(
    admin_client, production_ssrf, monkeypatch
):
    # The host resolves to a public address when the form checks it, to a private one when the service checks
    # again (DNS changed in between): the service's refusal must not become "added successfully".
    answers = iter(["93.184.216.34", "10.0.0.1"])
    real = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host == "flip.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers, "10.0.0.1"), port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    response = admin_client.post(
        reverse("admin:gdpr_requests_webhookendpoint_add"),
        {"url": "https://flip.example.test/hook", "events": ["request.created"]},
        follow=True,
    )
    assert response.status_code == 200
    shown = messages_of(response)
    assert any("Webhook URL refused" in m for m in shown)
    assert not any("added successfully" in m for m in shown)
    assert b"/None/change/" not in response.content
    assert not WebhookEndpoint.objects.exists()
    assert not LogEntry.objects.exists()


def test_an_accepted_webhook_url_is_added_once_with_its_log_entry(admin_client, production_ssrf, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    response = admin_client.post(
        reverse("admin:gdpr_requests_webhookendpoint_add"),
        {"url": "http://127.0.0.1:9/x", "events": ["request.created", "request.completed"]},
        follow=True,
    )
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["request.completed", "request.created"]
    assert any("added successfully" in m for m in messages_of(response))
    assert LogEntry.objects.get().object_id == str(endpoint.pk)


def test_a_duplicate_api_key_name_is_a_form_error_and_nothing_is_added_or_logged(admin_client, system_actor):
    from gdpr_requests.api.keys import api_key_create

    api_key_create(name="siem", scopes=["audit:read"], actor=system_actor)
    response = admin_client.post(
        reverse("admin:gdpr_requests_apikey_add"), {"name": " siem ", "scopes": ["audit:read"]}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"]
    assert "added successfully" not in response.content.decode()
    assert messages_of(response) == []
    assert ApiKey.objects.count() == 1
    assert not LogEntry.objects.exists()


def test_an_api_key_name_taken_between_the_forms_check_and_the_save_is_not_reported_as_added(admin_client):
    # Another session inserts the same name just before this INSERT (simulated in the same transaction, so it is
    # rolled back with it): the service's refusal must come back to the add page, not "added successfully".
    from django.db.models.signals import pre_save

    raced: list[str] = []

    def someone_else_first(sender, instance, **kwargs):
        if not raced:
            raced.append(instance.name)
            ApiKey.objects.create(name=instance.name, prefix="racer000", key_hash="0" * 64, scopes=["audit:read"])

    pre_save.connect(someone_else_first, sender=ApiKey)
    try:
        response = admin_client.post(
            reverse("admin:gdpr_requests_apikey_add"), {"name": "siem", "scopes": ["audit:read"]}, follow=True
        )
    finally:
        pre_save.disconnect(someone_else_first, sender=ApiKey)
    assert raced == ["siem"]
    assert response.status_code == 200
    shown = messages_of(response)
    assert shown == ["There is already an API key named 'siem'."]
    assert b"/None/change/" not in response.content
    assert not ApiKey.objects.exists()  # the add's transaction rolled back, the racer's row with it
    assert not LogEntry.objects.exists()
    assert not AuditEvent.objects.filter(action="api_key.created").exists()
