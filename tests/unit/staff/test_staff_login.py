"""Staff sign-in (issue 12): lockout after repeated failures, failures in the audit trail without the username,
and the TOTP second factor for Privacy staff and superusers when DSR_REQUIRE_STAFF_OTP is on."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from gdpr_requests.models import AuditEvent
from gdpr_requests.staff.login_security import username_digest
from tests.unit.staff.admin_support import PASSWORD, superuser  # noqa: F401

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
INDEX = "/admin/"


def sign_in(client: Client, username: str, password: str, *, address: str = "10.9.8.7", **extra: str):
    data = {"username": username, "password": password, "next": INDEX, **extra}
    return client.post(LOGIN, data, REMOTE_ADDR=address)


def is_signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_the_login_url_is_the_admins():
    assert reverse("admin:login") == LOGIN


def test_five_failures_lock_the_account_from_that_address_so_a_sixth_try_fails_even_with_the_password(
    client, staff_user
):
    for _ in range(4):
        assert sign_in(client, "alice", "wrong").status_code == 200
    assert sign_in(client, "alice", "wrong").status_code == 429  # the fifth failure locks
    response = sign_in(client, "alice", PASSWORD)  # the right password, but too late
    assert response.status_code == 429
    assert "Sign-in paused" in response.content.decode()
    assert "alice" not in response.content.decode()
    assert not is_signed_in(client)


def test_the_lock_is_for_that_username_and_address_only(client, staff_user, auditor_user):
    for _ in range(5):
        sign_in(client, "alice", "wrong")
    assert sign_in(Client(), "aud", PASSWORD).status_code == 302  # another account, same address
    other_address = Client()
    assert sign_in(other_address, "alice", PASSWORD, address="10.1.1.1").status_code == 302
    assert is_signed_in(other_address)


def test_a_success_before_the_limit_starts_the_count_again(client, staff_user):
    for _ in range(4):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice", PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice", PASSWORD).status_code == 302


def test_every_failure_is_audited_with_a_keyed_hash_of_the_username_only(client, staff_user):
    for _ in range(6):
        sign_in(client, "alice", "hunter2-wrong")
    events = list(AuditEvent.objects.filter(action="staff.login_failed").order_by("sequence"))
    assert len(events) == 6
    for event in events:
        assert event.actor_type == "system"
        assert event.request_reference == ""
        assert event.payload["username_digest"] == username_digest("alice")
        text = str(event.payload) + event.actor_label + event.actor_id
        assert "alice" not in text and "hunter2" not in text and "10.9.8.7" not in text
    # The fifth failure is the one that locks; the sixth is refused without a password check.
    assert [e.payload["locked_out"] for e in events] == [False] * 4 + [True, True]


def test_the_username_digest_is_keyed_and_stable():
    assert username_digest("Alice ") == username_digest("alice")
    assert username_digest("alice") != username_digest("bob")
    assert len(username_digest("alice")) == 16
    assert "alice" not in username_digest("alice")


# --- the second factor ------------------------------------------------------------------------------------
def token_for(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift):0{device.digits}d}"


@pytest.fixture
def otp_required(settings):
    settings.DSR_REQUIRE_STAFF_OTP = True


def test_with_otp_required_a_staff_session_without_a_verified_device_cannot_open_the_admin(
    client, staff_user, otp_required
):
    client.force_login(staff_user)
    response = client.get(INDEX)
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)


def test_with_otp_required_a_password_alone_does_not_sign_staff_in(client, staff_user, otp_required):
    TOTPDevice.objects.create(user=staff_user, name="phone", confirmed=True)
    response = sign_in(client, "alice", PASSWORD)
    assert response.status_code == 200
    assert "otp_token" in response.content.decode()
    assert client.get(INDEX).status_code == 302


def test_with_otp_required_a_wrong_token_does_not_sign_staff_in(client, staff_user, otp_required):
    device = TOTPDevice.objects.create(user=staff_user, name="phone", confirmed=True)
    wrong = f"{(int(token_for(device)) + 1) % 10**device.digits:0{device.digits}d}"
    assert sign_in(client, "alice", PASSWORD, otp_token=wrong).status_code == 200
    assert client.get(INDEX).status_code == 302
    event = AuditEvent.objects.get(action="staff.second_factor_failed")
    assert (event.actor_type, event.actor_id, event.payload) == ("staff", str(staff_user.pk), {})


def test_with_otp_required_staff_with_a_totp_token_open_the_admin(client, staff_user, otp_required):
    device = TOTPDevice.objects.create(user=staff_user, name="phone", confirmed=True)
    response = sign_in(client, "alice", PASSWORD, otp_token=token_for(device), otp_device=device.persistent_id)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert client.get(INDEX).status_code == 200


def test_with_otp_required_a_user_with_two_devices_picks_one(client, staff_user, otp_required):
    TOTPDevice.objects.create(user=staff_user, name="old phone", confirmed=True)
    device = TOTPDevice.objects.create(user=staff_user, name="new phone", confirmed=True)
    response = sign_in(client, "alice", PASSWORD, otp_token=token_for(device))
    assert "Please select a device." in str(response.context["form"].errors)
    response = sign_in(client, "alice", PASSWORD, otp_token=token_for(device), otp_device=device.persistent_id)
    assert response.status_code == 302
    assert client.get(INDEX).status_code == 200


def test_with_otp_required_superusers_need_a_token_too(client, superuser, otp_required):
    client.force_login(superuser)
    assert client.get(INDEX).status_code == 302
    device = TOTPDevice.objects.create(user=superuser, name="phone", confirmed=True)
    other = Client()
    response = sign_in(other, "root", PASSWORD, otp_token=token_for(device))
    assert response.status_code == 302, response.context["form"].errors
    assert other.get(INDEX).status_code == 200


def test_with_otp_required_auditors_sign_in_with_a_password(client, auditor_user, otp_required):
    assert sign_in(client, "aud", PASSWORD).status_code == 302
    assert client.get(INDEX).status_code == 200


def test_with_otp_off_staff_sign_in_with_a_password(client, staff_user, settings):
    settings.DSR_REQUIRE_STAFF_OTP = False
    assert sign_in(client, "alice", PASSWORD).status_code == 302
    assert client.get(INDEX).status_code == 200


def test_production_refuses_to_start_without_the_second_factor():
    import os
    import subprocess
    import sys

    from django.conf import settings as django_settings

    env = {
        **os.environ,
        "DJANGO_ENV": "production",
        "DJANGO_SECRET_KEY": "x" * 60,
        "FIELD_ENCRYPTION_KEYS": "a" * 43 + "=",
        "AUDIT_CHAIN_KEY": "k" * 40,
        "ALLOWED_HOSTS": "privacy.example.com",
        "REDIS_URL": "redis://127.0.0.1:6379/0",  # production needs a shared cache; nothing connects to it
        "DSR_REQUIRE_STAFF_OTP": "false",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=django_settings.BASE_DIR,
        env={**env, "DJANGO_SETTINGS_MODULE": "compliance.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DSR_REQUIRE_STAFF_OTP must be on when DJANGO_ENV=production." in result.stderr


def test_the_locked_address_is_a_valid_address_or_none():
    from django.test import RequestFactory

    from gdpr_requests.staff.login_security import login_client_ip

    assert login_client_ip(RequestFactory().get("/", REMOTE_ADDR="10.0.0.5")) == "10.0.0.5"
    assert login_client_ip(RequestFactory().get("/", REMOTE_ADDR="")) is None
    assert login_client_ip(None) is None


def test_force_login_still_works_with_the_login_log(client, staff_user):
    # force_login's request has no address: django-axes must log the login without one (PostgreSQL's inet
    # column would refuse a placeholder).
    client.force_login(staff_user)
    assert client.get(INDEX).status_code == 200
