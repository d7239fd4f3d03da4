"""API key services: create (the key is returned once), revoke, and look a presented key up.

A key reads ``dsr_<prefix>_<secret>``; the database keeps ``prefix`` (to tell keys apart) and the SHA-256 of the
whole key. Creating and revoking keys is audited; the key and its hash never enter the trail.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import ApiKey, ApiScope
from gdpr_requests.models.audit import ActorType
from gdpr_requests.requests.services import ServiceError

KEY_PREFIX = "dsr_"
# last_used_at is written at most this often per key, so a busy client does not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class NewApiKey:
    api_key: ApiKey
    key: str  # shown once; not stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_create(*, name: str, scopes: Sequence[str], actor: Actor) -> NewApiKey:
    """Make a key with ``scopes``; the returned ``key`` is the only copy there will ever be."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ServiceError("An API key needs a name of 1 to 100 characters.")
    scopes = sorted(set(scopes))
    if not scopes:
        raise ServiceError(f"Give the key at least one scope: {', '.join(ApiScope.values)}.")
    unknown = [scope for scope in scopes if scope not in ApiScope.values]
    if unknown:
        raise ServiceError(f"Unknown scope {unknown[0]!r}: use {', '.join(ApiScope.values)}.")
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    try:
        with transaction.atomic():
            api_key = ApiKey.objects.create(name=name, prefix=prefix, key_hash=hash_key(key), scopes=scopes)
            audit_record(
                action="api_key.created",
                actor=actor,
                payload={"api_key_id": api_key.pk, "key_name": name, "scopes": scopes},
            )
    except IntegrityError:
        raise ServiceError(f"There is already an API key named {name!r}.") from None
    return NewApiKey(api_key, key)


def api_key_revoke(*, api_key: ApiKey, actor: Actor) -> ApiKey:
    """Revoke for good (a conditional UPDATE: revoking twice records one event)."""
    with transaction.atomic():
        now = timezone.now()
        if ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now) != 1:
            raise ServiceError(f"API key {api_key.pk} is already revoked.")
        audit_record(
            action="api_key.revoked", actor=actor, payload={"api_key_id": api_key.pk, "key_name": api_key.name}
        )
    api_key.revoked_at = now
    return api_key


def api_key_for(presented: str) -> ApiKey | None:
    """The active key ``presented`` is, or None (unknown, malformed or revoked). Notes when it was last used."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        return None
    try:  # get(), not first(): the hash is unique, and first() would sort by the model's ordering
        api_key = ApiKey.objects.get(key_hash=hash_key(presented), revoked_at__isnull=True)
    except ApiKey.DoesNotExist:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or api_key.last_used_at < now - LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def actor_for_key(api_key: ApiKey) -> Actor:
    """How the audit trail names a key's actions: the system acting as ``api:<key name>``.

    The actor id stays empty: services store a numeric actor id as the staff user who verified or approved.
    """
    return Actor(ActorType.SYSTEM, "", f"api:{api_key.name}"[:150])
