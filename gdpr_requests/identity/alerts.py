"""The one staff alert of identity lookups: Mixpanel refused a project's Query API credential.

Sent once per pause: a StaffAlert row keyed on the project and the moment of the pause is claimed first (its
unique constraint makes a second sender a no-op). The email names the project and links to it; no personal data.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.urls import reverse

from gdpr_requests.audit.chain import Actor, audit_record
from gdpr_requests.models import IdentityLookup, LookupStatus, MixpanelProject, StaffAlert
from gdpr_requests.requests import selectors

logger = logging.getLogger("gdpr_requests.identity")

KIND = "identity_lookups_paused"


def alert_lookups_paused(*, project_id: int, paused_at: datetime) -> bool:
    """Email staff that the project's lookups are paused; True when this call sent it. Never raises."""
    try:
        project = MixpanelProject.objects.get(pk=project_id)
        recipients = selectors.staff_alert_recipients()
        if not recipients:
            logger.warning("identity lookups paused in project %s, but there are no staff alert recipients", project_id)
            return False
        try:
            with transaction.atomic():
                StaffAlert.objects.create(kind=KIND, object_ref=f"project:{project.pk}", key=paused_at.isoformat())
        except IntegrityError:  # already sent for this pause
            return False
        waiting = IdentityLookup.objects.filter(
            project=project, status__in=(LookupStatus.WAITING, LookupStatus.RUNNING)
        ).count()
        url = f"{settings.SITE_URL}{reverse('admin:gdpr_requests_mixpanelproject_change', args=[project.pk])}"
        body = (
            f"Mixpanel refused the Query API credential of project {project.name} "
            f"({project.lookup_paused_reason or 'HTTP 401/403'}).\n\n"
            f"Email lookups in this project are paused; {waiting} request(s) keep waiting and resume once the "
            "service account is renewed:\n"
            f"  manage.py mixpanel_project update {project.name} --service-account-username U "
            "--service-account-secret-file F\n\n"
            f"{url}\n"
        )
        EmailMessage(
            subject=f"[{settings.ORGANISATION_NAME} privacy] Mixpanel lookups paused in {project.name}",
            body=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=recipients,
            headers={"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"},
        ).send()
        StaffAlert.objects.filter(kind=KIND, object_ref=f"project:{project.pk}", key=paused_at.isoformat()).update(
            recipient_count=len(recipients)
        )
        audit_record(
            action="staff.alert_sent",
            actor=Actor.system("staff alerts"),
            payload={
                "kind": KIND,
                "count": 1,
                "references": [f"project:{project.pk}"],
                "recipient_count": len(recipients),
            },
        )
        return True
    except Exception as exc:  # an alert must never undo or break the pause it reports
        logger.error("identity lookup pause alert failed (%s)", type(exc).__name__)
        return False
