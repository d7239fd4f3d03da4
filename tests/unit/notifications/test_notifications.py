"""Emails to data subjects: one per event, plain text and HTML, ids only through the broker."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from celery.signals import task_prerun
from django.core import mail
from django.utils import timezone

from gdpr_requests.models import AuditEvent, DataSubjectRequest, SubjectNotification
from gdpr_requests.notifications import outbox as notifications
from gdpr_requests.portal import services as portal_services
from gdpr_requests.requests import exports, services

pytestmark = pytest.mark.django_db


@pytest.fixture
def task_calls():
    """Arguments of every Celery task run in this test (eager mode runs them in-process)."""
    calls: list[tuple[str, tuple, dict]] = []

    def record(sender=None, args=None, kwargs=None, **_):
        calls.append((sender.name, tuple(args or ()), dict(kwargs or {})))

    task_prerun.connect(record, weak=False)
    yield calls
    task_prerun.disconnect(record)


def sent_events(dsr) -> list[str]:
    return list(
        AuditEvent.objects.filter(request_reference=dsr.reference, action="notification.sent").values_list(
            "payload__event", flat=True
        )
    )


def test_each_lifecycle_event_emails_the_subject_once_with_ids_only_in_task_arguments(
    make_request, staff_actor, celery_eager, task_calls, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        dsr = portal_services.request_submit(
            kind="access", regulation="gdpr", email="ana@example.org", name="Ana", distinct_ids=["u-1"]
        ).request
    with django_capture_on_commit_callbacks(execute=True):
        services.request_confirm_email(request=dsr)
    with django_capture_on_commit_callbacks(execute=True):
        services.request_extend(request=dsr, reason="Several systems hold your data.", actor=staff_actor)
    with django_capture_on_commit_callbacks(execute=True):
        services.request_hold(request=dsr, reason="internal: waiting for engineering", actor=staff_actor)
        services.request_resume(request=dsr, actor=staff_actor)
        services.request_approve(request=dsr, actor=staff_actor)
        services.request_start_processing(request=dsr, task_count=1)
    exports.export_store(request=dsr, content=b"PK\x05\x06" + b"\x00" * 18)
    with django_capture_on_commit_callbacks(execute=True):
        services.request_complete(request=dsr)

    assert sent_events(dsr) == ["created", "verify", "extend", "complete"]
    assert [m.subject.split(" ")[0:3] for m in mail.outbox] == [
        ["Please", "confirm", "your"],
        ["We", "have", "confirmed"],
        ["We", "need", "more"],
        ["Your", "privacy", "request"],
    ]
    notify_calls = [args for name, args, kwargs in task_calls if name == "gdpr_requests.tasks.notify_subject"]
    assert notify_calls == [(dsr.pk, "created"), (dsr.pk, "verify"), (dsr.pk, "extend"), (dsr.pk, "complete")]
    for _name, args, kwargs in task_calls:
        assert not kwargs
        assert all(isinstance(value, int | str) and "@" not in str(value) and "Ana" not in str(value) for value in args)
    extended = mail.outbox[2]
    dsr.refresh_from_db()
    assert "Several systems hold your data." in extended.body
    assert f"{dsr.due_at.day} {dsr.due_at:%B %Y}" in extended.body
    assert "/download/" in mail.outbox[3].body


@pytest.mark.parametrize("event", ["reject", "cancel", "expire"])
def test_closing_events_email_the_subject(
    make_request, staff_actor, celery_eager, django_capture_on_commit_callbacks, event
):
    dsr = make_request(email="ana@example.org", name="Ana & <Bo>")
    if event != "expire":  # only an unconfirmed request expires, and its email does not repeat the name
        services.request_confirm_email(request=dsr)
    with django_capture_on_commit_callbacks(execute=True):
        if event == "reject":
            services.request_reject(request=dsr, reason="No account uses this address.", actor=staff_actor)
        elif event == "cancel":
            services.request_cancel(request=dsr, actor=staff_actor)
        else:
            services.request_expire(request=dsr)
    (message,) = mail.outbox
    assert message.to == ["ana@example.org"] and dsr.reference in message.subject
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html"
    if event == "expire":
        assert message.body.startswith("Hello,\n") and "Ana" not in message.body and "Ana" not in html
    else:
        assert "Hello Ana & <Bo>," in message.body  # plain text is not HTML-escaped
        assert "Hello Ana &amp; &lt;Bo&gt;," in html  # HTML is
    if event == "reject":
        assert "No account uses this address." in message.body and "No account uses this address." in html
    if event == "cancel":
        assert "withdrawn by our privacy team" in message.body


# What the request must look like for each event's email to be sent (the outbox checks it at send time).
STATE_FOR_EVENT = {
    "verify": {"verified_at": timezone.now()},
    "extend": {"extended_at": timezone.now()},
    "complete": {"status": "completed"},
    "reject": {"status": "rejected"},
    "cancel": {"status": "cancelled"},
    "expire": {"status": "expired"},
}


@pytest.mark.parametrize(
    "event", ["created", "verify", "extend", "complete", "reject", "cancel", "expire", "duplicate:1", "resend:2"]
)
def test_every_email_has_plain_text_and_html_without_template_leftovers(make_request, event):
    dsr = make_request(kind="access", email="ana@example.org", name="Ana")
    DataSubjectRequest.objects.filter(pk=dsr.pk).update(
        extension_reason="Busy", rejection_reason="No", **STATE_FOR_EVENT.get(event, {})
    )
    assert notifications.send_subject_notification(request_id=dsr.pk, event=event)
    (message,) = mail.outbox
    html = message.alternatives[0][0]
    for text in (message.subject, message.body, html):
        assert "{{" not in text and "{%" not in text and "None" not in text
    assert dsr.reference in message.body and dsr.reference in html
    assert message.extra_headers["Auto-Submitted"] == "auto-generated"
    assert message.reply_to == ["privacy@example.com"]
    assert "http://127.0.0.1:8000/" in message.body


def test_a_retried_task_does_not_send_twice(make_request):
    dsr = make_request()
    assert notifications.send_subject_notification(request_id=dsr.pk, event="created") is True
    assert notifications.send_subject_notification(request_id=dsr.pk, event="created") is False
    assert len(mail.outbox) == 1
    row = SubjectNotification.objects.get(request=dsr, event="created")
    assert row.sent_at is not None and row.attempts == 1
    assert sent_events(dsr) == ["created"]


def test_a_failed_send_is_released_for_a_retry_and_logged_without_the_address(make_request, settings, caplog):
    dsr = make_request(email="secret-person@example.org")
    settings.EMAIL_BACKEND = "tests.unit.notifications.test_notifications.FailingBackend"
    with caplog.at_level(logging.ERROR, logger="gdpr_requests.notifications"):
        assert notifications.send_subject_notification(request_id=dsr.pk, event="created") is False
    assert dsr.reference in caplog.text and "secret-person" not in caplog.text
    row = SubjectNotification.objects.get(request=dsr, event="created")
    assert row.sent_at is None and row.claimed_at is None
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert notifications.send_subject_notification(request_id=dsr.pk, event="created") is True
    assert len(mail.outbox) == 1


class FailingBackend:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        import smtplib

        raise smtplib.SMTPRecipientsRefused({messages[0].to[0]: (550, b"no such user")})


def test_the_sweep_requeues_emails_whose_message_was_lost(make_request, celery_eager):
    # Each request's "created" email was recorded at intake; none of their messages reached a worker.
    lost = make_request(email="lost@example.org")
    done = make_request(email="done@example.org")
    SubjectNotification.objects.filter(request=lost).update(created_at=timezone.now() - timedelta(minutes=5))
    SubjectNotification.objects.filter(request=done).update(
        created_at=timezone.now() - timedelta(minutes=5), sent_at=timezone.now()
    )
    make_request(email="fresh@example.org")  # its own task is still on its way
    assert notifications.send_pending() == 1
    assert [m.to for m in mail.outbox] == [["lost@example.org"]]
    assert notifications.send_pending() == 0


def test_nothing_is_sent_for_unknown_events_missing_or_purged_requests(make_request):
    dsr = make_request()
    assert notifications.send_subject_notification(request_id=dsr.pk, event="approve") is False
    assert notifications.send_subject_notification(request_id=dsr.pk, event="duplicate:x") is False
    assert notifications.send_subject_notification(request_id=dsr.pk + 1000, event="verify") is False
    DataSubjectRequest.objects.filter(pk=dsr.pk).update(purged_at=timezone.now())
    assert notifications.send_subject_notification(request_id=dsr.pk, event="verify") is False
    assert not mail.outbox


def test_a_download_code_email_is_not_sent_when_there_is_no_file(make_request):
    dsr = make_request(kind="access")
    assert notifications.send_subject_notification(request_id=dsr.pk, event="download_code:5") is False
    assert not mail.outbox
    assert (
        SubjectNotification.objects.get(request=dsr, event="download_code:5").sent_at is not None
    )  # nothing left to retry


def test_internal_transitions_send_nothing(make_request, staff_actor, celery_eager, django_capture_on_commit_callbacks):
    dsr = make_request()
    services.request_confirm_email(request=dsr)
    with django_capture_on_commit_callbacks(execute=True):
        services.request_hold(request=dsr, reason="checking", actor=staff_actor)
        services.request_resume(request=dsr, actor=staff_actor)
        services.request_approve(request=dsr, actor=staff_actor)
    assert not mail.outbox
