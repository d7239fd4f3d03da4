"""Services for Mixpanel projects: create and change them, with validation and an audit event.

Used by the operator CLI (``mixpanel_project``) and the staff admin. Secrets (the GDPR OAuth token, the API
secret) never reach the audit trail or an error message: events record which fields changed, not their values.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import MixpanelProject, Residency
from gdpr_requests.requests.services import ServiceError

MAX_BATCH_SIZE = 2000
SECRET_FIELDS = ("oauth_token", "api_secret")
# Fields project_update accepts; anything else is a programming error, not a user error.
UPDATABLE_FIELDS = frozenset(
    {
        "name",
        "mixpanel_project_id",
        "project_token",
        "oauth_token",
        "token_expires_on",
        "residency",
        "base_url_override",
        "deletion_batch_size",
        "api_secret",
        "token_owner_email",
        "is_active",
        "deletion_approvals_required",
    }
)
# Fields whose old and new values may go into the trail (under these keys: "name" is refused in payloads).
# Secrets, the owner's email and the base URL (it may carry proxy credentials) are named, never shown.
_AUDIT_KEYS = {
    "name": "project_name",
    "mixpanel_project_id": "mixpanel_project_id",
    "token_expires_on": "token_expires_on",
    "residency": "residency",
    "deletion_batch_size": "deletion_batch_size",
    "is_active": "is_active",
    "deletion_approvals_required": "deletion_approvals_required",
}
# Changing a credential makes any earlier check result meaningless.
_CREDENTIAL_FIELDS = frozenset({"oauth_token", "project_token", "residency", "base_url_override"})


def _clean(values: dict[str, Any], *, instance: MixpanelProject | None) -> dict[str, Any]:
    """Validate and normalise the given fields; raise ServiceError with a message fit for an operator."""
    cleaned: dict[str, Any] = {}
    for field, value in values.items():
        if field in ("name", "mixpanel_project_id", "project_token", "token_owner_email", "base_url_override"):
            value = str(value or "").strip()
        if field in SECRET_FIELDS:
            value = str(value or "").strip()
        cleaned[field] = value

    if "name" in cleaned:
        name = cleaned["name"]
        if not name:
            raise ServiceError("A project needs a name.")
        if len(name) > 100:
            raise ServiceError("The project name is longer than 100 characters.")
        taken = MixpanelProject.objects.filter(name__iexact=name)
        if instance is not None:
            taken = taken.exclude(pk=instance.pk)
        if taken.exists():
            raise ServiceError(f"A project named {name!r} already exists.")
    if "mixpanel_project_id" in cleaned:
        project_id = cleaned["mixpanel_project_id"]
        if not project_id or not project_id.isdigit() or len(project_id) > 32:
            raise ServiceError("The Mixpanel project id must be digits (it is shown in the project's settings).")
    if "project_token" in cleaned:
        token = cleaned["project_token"]
        if not token or len(token) > 64 or not all(ch.isalnum() or ch in "-_" for ch in token):
            raise ServiceError("The project token must be 1 to 64 letters, digits, '-' or '_'.")
    if "oauth_token" in cleaned and not cleaned["oauth_token"]:
        raise ServiceError("The GDPR OAuth token is required.")
    if "oauth_token" in cleaned and any(ch.isspace() for ch in cleaned["oauth_token"]):
        raise ServiceError("The GDPR OAuth token contains whitespace; paste the token alone.")
    if "token_expires_on" in cleaned:
        expires = cleaned["token_expires_on"]
        if isinstance(expires, str):
            try:
                expires = date.fromisoformat(expires.strip())
            except ValueError:
                raise ServiceError("The token expiry must be a date (YYYY-MM-DD).") from None
        if isinstance(expires, datetime) or not isinstance(expires, date):
            raise ServiceError("The token expiry must be a date (YYYY-MM-DD).")
        cleaned["token_expires_on"] = expires
    if "residency" in cleaned:
        residency = str(cleaned["residency"] or "").strip().lower()
        if residency not in Residency.values:
            raise ServiceError(f"Unknown residency {residency!r}: use one of {', '.join(Residency.values)}.")
        cleaned["residency"] = residency
    if cleaned.get("base_url_override"):
        parts = urlsplit(cleaned["base_url_override"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServiceError("The base URL must be an http:// or https:// URL with a host.")
        cleaned["base_url_override"] = cleaned["base_url_override"].rstrip("/")
    if "deletion_approvals_required" in cleaned:
        approvals = cleaned["deletion_approvals_required"]
        if isinstance(approvals, bool) or approvals not in (1, 2):
            raise ServiceError("Deletion approvals required must be 1 or 2.")
    if "deletion_batch_size" in cleaned:
        size = cleaned["deletion_batch_size"]
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
            raise ServiceError(f"The deletion batch size must be a whole number from 1 to {MAX_BATCH_SIZE}.")
    if cleaned.get("token_owner_email"):
        try:
            validate_email(cleaned["token_owner_email"])
        except ValidationError:
            raise ServiceError("The token owner's email is not a valid email address.") from None
    if "is_active" in cleaned and not isinstance(cleaned["is_active"], bool):
        raise ServiceError("is_active must be true or false.")
    return cleaned


def project_create(
    *,
    name: str,
    mixpanel_project_id: str,
    project_token: str,
    oauth_token: str,
    token_expires_on: date | str,
    residency: str = Residency.US,
    base_url_override: str = "",
    deletion_batch_size: int = 1999,
    api_secret: str = "",
    token_owner_email: str = "",
    actor: Actor,
) -> MixpanelProject:
    """Register a Mixpanel project. The audit event names the project, never its secrets."""
    values = _clean(
        {
            "name": name,
            "mixpanel_project_id": mixpanel_project_id,
            "project_token": project_token,
            "oauth_token": oauth_token,
            "token_expires_on": token_expires_on,
            "residency": residency,
            "base_url_override": base_url_override,
            "deletion_batch_size": deletion_batch_size,
            "api_secret": api_secret,
            "token_owner_email": token_owner_email,
        },
        instance=None,
    )
    now = timezone.now()
    try:
        with transaction.atomic():
            project = MixpanelProject.objects.create(
                **values,
                oauth_token_changed_at=now,
                api_secret_changed_at=now if values["api_secret"] else None,
            )
            audit_record(
                action="project.created",
                actor=actor,
                payload={
                    "project": project.name,
                    "project_pk": project.pk,
                    "mixpanel_project_id": project.mixpanel_project_id,
                    "residency": project.residency,
                    "base_url_overridden": bool(project.base_url_override),
                    "deletion_batch_size": project.deletion_batch_size,
                    "token_expires_on": project.token_expires_on.isoformat(),
                    "has_api_secret": bool(project.api_secret),
                },
            )
    except IntegrityError:  # a concurrent create with the same name
        raise ServiceError(f"A project named {values['name']!r} already exists.") from None
    return project


def project_update(*, project: MixpanelProject, actor: Actor, **changes: Any) -> MixpanelProject:
    """Change some fields of a project; setting a secret stamps when it changed.

    The audit event lists the changed field names (and the old and new values of the non-secret ones).
    Changing the OAuth token also starts its expiry warnings afresh and resets the credential status.
    """
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise TypeError(f"project_update() got unknown fields: {', '.join(sorted(unknown))}")
    cleaned = _clean(changes, instance=project)
    now = timezone.now()
    with transaction.atomic():
        locked = MixpanelProject.objects.select_for_update().get(pk=project.pk)
        changed = [field for field, value in cleaned.items() if getattr(locked, field) != value]
        if not changed:
            return locked
        extra: dict[str, Any] = {}
        if "oauth_token" in changed:
            extra["oauth_token_changed_at"] = now
            extra["expiry_warnings_sent"] = []
        if "token_expires_on" in changed:
            extra["expiry_warnings_sent"] = []
        if "api_secret" in changed:
            extra["api_secret_changed_at"] = now
        if _CREDENTIAL_FIELDS.intersection(changed):
            extra.update(credential_status="unknown", credential_checked_at=None, credential_error="")
        values = {field: cleaned[field] for field in changed}
        details = {
            _AUDIT_KEYS[field]: {"from": _plain(getattr(locked, field)), "to": _plain(values[field])}
            for field in changed
            if field in _AUDIT_KEYS
        }
        for field, value in {**values, **extra}.items():
            setattr(locked, field, value)
        locked.save(update_fields=[*values, *extra, "updated_at"])
        audit_record(
            action="project.updated",
            actor=actor,
            payload={"project": locked.name, "project_pk": locked.pk, "fields": sorted(changed), "changes": details},
        )
    return locked


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value
