"""Emails to privacy staff: each alert once (a second sweep sends nothing new), a new occasion alerts again,
no personal data of requesters, and a failed send is tried again on the next sweep."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import smtplib
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend

from gdpr_requests.audit.chain import chain_head
from gdpr_requests.models import AuditEvent, MixpanelProject, StaffAlert
from gdpr_requests.notifications import staff_alerts
from gdpr_requests.requests import selectors, services
from tests.unit.staff.admin_support import make_failed, other_staff  # noqa: F401  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 18, 8, 0, tzinfo=UTC)
PERSONAL = ("person@example.org", "Pat Person", "user-1")


class RefusingBackend(BaseEmailBackend):
    """An SMTP server that is down."""

    def send_messages(self, email_messages):
        raise smtplib.SMTPServerDisconnected("connection to mail.example.org lost")


@pytest.fixture(autouse=True)
def _recipients(settings, staff_user):
    settings.STAFF_ALERT_EMAILS = ["dpo@example.org"]


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def bodies() -> str:
    return "\n".join(f"{m.subject}\n{m.body}" for m in mail.outbox)


def test_recipients_are_active_privacy_staff_with_an_email_and_the_configured_addresses(
    django_user_model, other_staff, settings
):
    from django.contrib.auth.models import Group

    gone = django_user_model.objects.create_user("gone", "gone@staff.example", "x", is_active=False)
    silent = django_user_model.objects.create_user("silent", "", "x")
    for user in (gone, silent):
        user.groups.add(Group.objects.get(name="Privacy staff"))
    settings.STAFF_ALERT_EMAILS = ["dpo@example.org", "ALICE@staff.example"]
    assert selectors.staff_alert_recipients() == ["alice@staff.example", "bob@staff.example", "dpo@example.org"]


def test_a_verified_request_is_announced_once(frozen, make_request, project):
    dsr = make_request(verified_by_staff="known customer")
    assert staff_alerts.send_alerts() == {"awaiting_review": 1}
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject.endswith(f"{dsr.reference} is verified and waits for review")
    assert sorted(message.to) == ["alice@staff.example", "dpo@example.org"]
    assert f"/admin/gdpr_requests/datasubjectrequest/{dsr.pk}/change/" in message.body
    assert staff_alerts.send_alerts() == {}
    assert len(mail.outbox) == 1
    event = AuditEvent.objects.get(action="staff.alert_sent")
    assert event.payload == {"kind": "awaiting_review", "count": 1, "references": [dsr.reference], "recipient_count": 2}


def test_each_kind_of_alert_is_sent_once_and_names_no_personal_data(frozen, make_request, project, staff_actor):
    failed = make_request(verified_by_staff="known")
    make_failed(failed, staff_actor)
    # Received 21 Feb: due 21 March, three days from "today".
    due = make_request(email="other@example.org", received_at=datetime(2026, 2, 21, 9, tzinfo=UTC))
    sent = staff_alerts.send_alerts()
    assert sent == {"needs_attention": 1, "due_soon": 1}
    text = bodies()
    assert f"{failed.reference} needs attention" in text and "processing failed" in text
    assert f"{due.reference} is due within 3 days" in text and "due in 3 days" in text
    assert not any(value in text for value in PERSONAL)
    assert staff_alerts.send_alerts() == {}
    assert len(mail.outbox) == 2


def test_a_new_occasion_alerts_again(frozen, make_request, project, staff_actor):
    dsr = make_request(verified_by_staff="known")
    make_failed(dsr, staff_actor)
    staff_alerts.send_alerts()
    frozen.shift(timedelta(hours=1))
    services.request_retry(request=dsr, actor=staff_actor)
    services.request_start_processing(request=dsr, task_count=1)
    services.request_fail(request=dsr, why="failed again")
    sent = staff_alerts.send_alerts()
    assert sent.get("needs_attention") == 1
    assert StaffAlert.objects.filter(kind="needs_attention", object_ref=dsr.reference).count() == 2


def test_a_request_stuck_without_progress_needs_attention(frozen, make_request, project, settings):
    settings.DSR_STUCK_HOURS = 72
    dsr = make_request(verified_by_staff="known")
    assert "needs_attention" not in staff_alerts.send_alerts()
    frozen.shift(timedelta(hours=73))
    assert staff_alerts.send_alerts().get("needs_attention") == 1
    assert "no progress for more than 72 hours" in mail.outbox[-1].body
    assert dsr.reference in mail.outbox[-1].body


def test_a_failed_send_is_released_and_tried_again(frozen, make_request, project, settings):
    make_request(verified_by_staff="known")
    settings.EMAIL_BACKEND = "tests.unit.notifications.test_staff_alerts.RefusingBackend"
    assert staff_alerts.send_alerts() == {}
    assert not StaffAlert.objects.exists() and not AuditEvent.objects.filter(action="staff.alert_sent").exists()
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert staff_alerts.send_alerts() == {"awaiting_review": 1}


def test_nothing_is_claimed_when_there_is_nobody_to_tell(frozen, make_request, project, settings, staff_user):
    staff_user.groups.clear()
    settings.STAFF_ALERT_EMAILS = []
    make_request(verified_by_staff="known")
    assert staff_alerts.send_alerts() == {}
    assert not StaffAlert.objects.exists()


def test_credential_expiry_is_warned_at_30_7_and_1_days_and_once_expired(project):
    MixpanelProject.objects.filter(pk=project.pk).update(token_expires_on=NOW.date() + timedelta(days=30))
    sent_on = []
    for day in range(0, 33):
        with time_machine.travel(NOW + timedelta(days=day), tick=False):
            for _sweep in range(2):  # the beat runs it several times a day
                if staff_alerts.warn_expiring_credentials():
                    sent_on.append(day)
    assert sent_on == [0, 23, 29, 30]  # 30, 7 and 1 days left, then the day it expires
    subjects = [m.subject for m in mail.outbox]
    assert len(subjects) == 4 and all("Main app" in s for s in subjects)
    assert "expires in 30 days" in mail.outbox[0].body and "expires today" in mail.outbox[-1].body
    project.refresh_from_db()
    assert project.expiry_warnings_sent == [30, 7, 1, 0]


def test_a_renewed_token_starts_its_warnings_afresh(project):
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.projects import services as projects

    MixpanelProject.objects.filter(pk=project.pk).update(token_expires_on=NOW.date() + timedelta(days=5))
    with time_machine.travel(NOW, tick=False):
        assert staff_alerts.warn_expiring_credentials() == 1
        project.refresh_from_db()
        projects.project_update(
            project=project,
            actor=Actor.system(),
            oauth_token="renewed",
            token_expires_on=NOW.date() + timedelta(days=6),
        )
        assert staff_alerts.warn_expiring_credentials() == 1
        assert staff_alerts.warn_expiring_credentials() == 0
    assert len(mail.outbox) == 2


def test_the_daily_digest_is_sent_once_a_day(make_request, project, staff_actor):
    with time_machine.travel(NOW, tick=False):
        overdue = make_request(received_at=datetime(2026, 2, 10, 9, tzinfo=UTC))
        failed = make_request(email="f@example.org", verified_by_staff="known")
        make_failed(failed, staff_actor)
        assert staff_alerts.send_digest() is True
        assert staff_alerts.send_digest() is False
    assert len(mail.outbox) == 1
    digest = mail.outbox[0]
    assert "Daily digest: 1 overdue, 0 due this week, 1 need attention" in digest.subject
    assert overdue.reference in digest.body and "overdue by 8 days" in digest.body
    assert failed.reference in digest.body
    assert not any(value in digest.body for value in PERSONAL)
    # The head as it was when the digest was written, just before its own staff.digest_sent event.
    sent_event = AuditEvent.objects.get(action="staff.digest_sent")
    head = AuditEvent.objects.get(sequence=sent_event.sequence - 1)
    sequence, head_hash = head.sequence, head.hash
    assert chain_head()[0] == sent_event.sequence
    assert f"Audit trail head: event {sequence}, hash {head_hash}" in " ".join(digest.body.split())
    with time_machine.travel(NOW + timedelta(days=1), tick=False):
        assert staff_alerts.send_digest() is True
    assert len(mail.outbox) == 2


def test_the_celery_tasks_call_these_functions(make_request, project, settings):
    from gdpr_requests.notifications import tasks

    with time_machine.travel(NOW, tick=False):
        make_request(verified_by_staff="known")
        tasks.send_staff_alerts.apply()
        tasks.send_staff_digest.apply()
        tasks.warn_expiring_credentials.apply()
    subjects = [m.subject for m in mail.outbox]
    assert any(s.endswith("is verified and waits for review") for s in subjects)
    assert any("Daily digest" in s for s in subjects)
