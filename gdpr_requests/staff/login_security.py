"""Staff sign-in: failed logins in the audit trail, and the second factor (TOTP, django-otp) staff must give.

Throttling and lockout are django-axes' (settings: a username and address pair is locked for AXES_COOLOFF_TIME
after AXES_FAILURE_LIMIT failures). What this module adds:

- ``audit_failed_login``: every failed login (a wrong password, or any attempt while locked out) becomes an audit
  event. The username is recorded only as a keyed hash prefix: enough to see that one account is being tried
  again and again, useless to anyone without the key (the username may be an email address, and a password
  typed into the username box is not rare).
- ``second_factor_required`` and ``StaffLoginForm``: with ``DSR_REQUIRE_STAFF_OTP`` on (the production default),
  Privacy staff and superusers sign in with a TOTP token and the admin site lets them in only once verified.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.db import transaction
from django.http import HttpRequest
from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.portal.ratelimit import client_ip
from gdpr_requests.staff.common import WORK_PERMISSION

STAFF_GROUP = "Privacy staff"
USERNAME_DIGEST_LENGTH = 16


def username_digest(username: str) -> str:
    """A keyed hash prefix of ``username`` (case-insensitive): the same account gives the same value."""
    key = hashlib.sha256(b"staff-login-username:" + settings.AUDIT_CHAIN_KEY.encode()).digest()
    return hmac.new(key, (username or "").strip().casefold().encode(), hashlib.sha256).hexdigest()[
        :USERNAME_DIGEST_LENGTH
    ]


def audit_failed_login(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any):
    """``user_login_failed`` receiver (connected in apps.py): one audit event per failed login."""
    from django.contrib.auth import get_user_model

    username = str(credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username") or "")
    with transaction.atomic():
        audit_record(
            action="staff.login_failed",
            actor=Actor.system("login"),
            payload={
                "username_digest": username_digest(username),
                # Set by django-axes (its receiver runs first) when this attempt locked the account and address or
                # was refused because they are locked.
                "locked_out": bool(getattr(request, "axes_locked_out", False)),
            },
        )


def audit_failed_second_factor(sender: Any, user: Any, **kwargs: Any) -> None:
    """``otp_verification_failed`` receiver (connected in apps.py): the password was right, the token was not."""
    with transaction.atomic():
        audit_record(action="staff.second_factor_failed", actor=Actor.staff(user), payload={})


def login_client_ip(request: HttpRequest | None) -> str | None:
    """The address django-axes locks on (AXES_CLIENT_IP_CALLABLE): the portal's reading of the client address
    (honouring DSR_TRUSTED_PROXY_HOPS), or None when there is no valid one (a request built by ``force_login``
    has none, and PostgreSQL's inet column refuses anything that is not an address)."""
    if request is None:
        return None
    address = client_ip(request)
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def axes_client_str(
    username: str, ip_address: str, user_agent: str, path_info: Any, request: HttpRequest | None
) -> str:
    """How django-axes names a client in its log lines: the username digest, never the username or address."""
    path = path_info[0] if isinstance(path_info, list | tuple) else path_info
    return f'{{username_digest: "{username_digest(username or "")}", path_info: "{path}"}}'


def second_factor_required(user: Any) -> bool:
    """Whether ``user`` must sign in with a TOTP token: Privacy staff and superusers, when the setting is on."""
    if not getattr(settings, "DSR_REQUIRE_STAFF_OTP", False) or not user.is_authenticated:
        return False
    return bool(user.is_superuser or user.has_perm(WORK_PERMISSION) or user.groups.filter(name=STAFF_GROUP).exists())


class StaffLoginForm(OTPAdminAuthenticationForm):
    """The admin login with a TOTP token field; the token is asked only of those who need a second factor (an
    auditor signs in with a password alone)."""

    def _chosen_device(self, user: Any) -> Any:
        # django-otp asks the user to pick a device before it checks a token; with a single confirmed device
        # (the usual case: one authenticator app) there is nothing to pick.
        chosen = super()._chosen_device(user)
        if chosen is None and not self.cleaned_data.get("otp_device"):
            devices = list(devices_for_user(user, confirmed=True))
            if len(devices) == 1:
                return devices[0]
        return chosen

    def clean(self) -> dict[str, Any]:
        self.cleaned_data = AdminAuthenticationForm.clean(self)
        user = self.get_user()
        if user is not None and second_factor_required(user):
            self.clean_otp(user)
        return self.cleaned_data
