"""The admin pages for API keys and webhooks: create shows the secret once, actions call the services,
and only superusers get in."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from gdpr_requests.models import ApiKey, WebhookDelivery, WebhookEndpoint
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
    settings.WEBHOOK_SSRF_CHECKS = True
    refused = admin_client.post(
        reverse("admin:gdpr_requests_webhookendpoint_add"),
        {"url": "https://10.0.0.1/x", "events": ["request.created"]},
        follow=True,
    )
    assert any("Webhook URL refused" in m for m in messages_of(refused))
    assert not WebhookEndpoint.objects.exists()
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
