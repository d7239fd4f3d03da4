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


# --- Emails to an address nobody has confirmed yet ------------------------------------------------------
@pytest.mark.parametrize("event", ["created", "duplicate:1", "resend:2", "expire"])
def test_emails_to_an_unconfirmed_address_repeat_none_of_the_submitted_text(make_request, event):
    dsr = make_request(name="Your account is locked, call +1 555 0100", email="ana@example.org")
    DataSubjectRequest.objects.filter(pk=dsr.pk).update(**STATE_FOR_EVENT.get(event, {}))
    assert notifications.send_subject_notification(request_id=dsr.pk, event=event) is True
    (message,) = mail.outbox
    html = message.alternatives[0][0]
    for text in (message.subject, message.body, html):
        assert "locked" not in text and "555" not in text
    assert message.body.startswith("Hello,\n") and '<p style="margin:0 0 16px;">Hello,</p>' in html


def test_once_the_address_is_confirmed_emails_greet_the_person_by_name(make_request):
    dsr = make_request(name="Ana Núñez")
    services.request_confirm_email(request=dsr)
    assert notifications.send_subject_notification(request_id=dsr.pk, event="verify") is True
    assert mail.outbox[0].body.startswith("Hello Ana Núñez,\n")


# --- An event that no longer fits the request is not emailed ------------------------------------------------
@pytest.mark.parametrize("event", ["verify", "extend", "complete", "reject", "cancel", "expire"])
def test_a_stale_event_for_an_unverified_request_is_dropped_and_logged_without_personal_data(
    make_request, caplog, event
):
    dsr = make_request(email="secret-person@example.org", name="Secret Person")
    with caplog.at_level(logging.WARNING, logger="gdpr_requests.notifications"):
        assert notifications.send_subject_notification(request_id=dsr.pk, event=event) is False
    assert not mail.outbox
    row = SubjectNotification.objects.get(request=dsr, event=event)
    assert row.sent_at is not None and row.claimed_at is None and row.attempts == 0  # closed, never sent
    assert f"dropped the {event} email for {dsr.reference}: the request is unverified" in caplog.text
    assert "secret-person" not in caplog.text and "Secret" not in caplog.text
    assert sent_events(dsr) == []
    # Not sent again by a redelivered message or by the sweep.
    assert notifications.send_subject_notification(request_id=dsr.pk, event=event) is False
    SubjectNotification.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    assert notifications.send_pending() == 0
    assert not mail.outbox


def test_a_complete_email_goes_out_only_for_a_completed_request(make_request, staff_actor):
    dsr = make_request()
    services.request_confirm_email(request=dsr)
    services.request_approve(request=dsr, actor=staff_actor)
    assert notifications.send_subject_notification(request_id=dsr.pk, event="complete") is False
    services.request_start_processing(request=dsr, task_count=1)
    SubjectNotification.objects.filter(request=dsr, event="complete").delete()  # a stray message, now a real one
    services.request_complete(request=dsr)
    assert notifications.send_subject_notification(request_id=dsr.pk, event="complete") is True
    assert "is complete" in mail.outbox[0].subject


# --- The sweep gives up on an email: staff hear of it, the email stays unsent -----------------------------
def test_an_email_the_sweep_gives_up_on_alerts_staff_once_and_stays_unsent(make_request, settings, celery_eager):
    settings.STAFF_ALERT_EMAILS = ["dpo@example.org"]
    failing = make_request(email="secret-person@example.org")
    old = make_request(email="other@example.org")
    SubjectNotification.objects.filter(request=failing).update(
        attempts=notifications.MAX_ATTEMPTS, created_at=timezone.now() - timedelta(minutes=30)
    )
    SubjectNotification.objects.filter(request=old).update(
        created_at=timezone.now() - notifications.SWEEP_MAX_AGE - timedelta(minutes=1)
    )
    assert notifications.send_pending() == 0
    (alert,) = mail.outbox
    assert alert.to == ["dpo@example.org"]
    assert "2 emails to requesters were not sent" in alert.subject
    assert failing.reference in alert.body and old.reference in alert.body
    assert "secret-person" not in alert.body and "other@example.org" not in alert.body
    assert AuditEvent.objects.filter(action="staff.alert_sent", payload__kind="subject_email_unsent").count() == 1
    # Once per occasion, and the rows stay unsent (visible, not deleted).
    assert notifications.send_pending() == 0
    assert len(mail.outbox) == 1
    assert SubjectNotification.objects.filter(sent_at__isnull=True).count() == 2
    assert notifications.oldest_unsent_email_age_seconds() >= notifications.SWEEP_MAX_AGE.total_seconds()


def test_the_age_of_the_oldest_unsent_email(make_request):
    assert notifications.oldest_unsent_email_age_seconds() is None
    dsr = make_request()  # its "created" email is due
    SubjectNotification.objects.filter(request=dsr).update(created_at=timezone.now() - timedelta(minutes=7))
    age = notifications.oldest_unsent_email_age_seconds()
    assert isinstance(age, float) and 7 * 60 <= age < 8 * 60
    assert notifications.send_subject_notification(request_id=dsr.pk, event="created") is True
    assert notifications.oldest_unsent_email_age_seconds() is None
