"""Demo data for identity lookups (``manage.py demo_setup``, the embedded default only).

The sandbox project gets a service account the sandbox accepts, and an email-only deletion arrives verified for
an address the sandbox knows on two profiles (a named one and an anonymous ``$device:`` one), so ``make run``
shows a request resolving end to end: candidates appear on its page within a beat tick or two.
"""

from __future__ import annotations

import secrets

from gdpr_requests.audit.chain import Actor
from gdpr_requests.crypto import email_hash
from gdpr_requests.identity.services import project_set_query_access
from gdpr_requests.models import Channel, DataSubjectRequest, MixpanelProject
from gdpr_requests.requests import services

DEMO_EMAIL = "jane.doe@example.com"


def demo_identity_setup(*, project: MixpanelProject) -> str:
    """Idempotent; returns a line for the operator."""
    actor = Actor.system("demo_setup")
    if not project.query_username:
        project = project_set_query_access(
            project=project, actor=actor, username="demo-service-account", secret=secrets.token_hex(16)
        )
    if not DataSubjectRequest.objects.filter(email_hash=email_hash(DEMO_EMAIL)).exists():
        services.request_create(
            kind="deletion",
            regulation="gdpr",
            email=DEMO_EMAIL,
            name="Jane Doe",
            channel=Channel.STAFF,
            projects=[project],
            actor=actor,
            verified_by_staff="demo data: identity assumed",
        )
    return f"Profile lookups: {DEMO_EMAIL}'s deletion is looked up in '{project.name}' (see its request page)."
