"""The emails to data subjects, built from templates/emails/ when they are sent (never before: the row holds no
personal data, and a download code is made at this moment so that it never travels through the broker).

Each email is written in the request's language (``DataSubjectRequest.language``, taken at intake), whatever
language the worker runs in: subject, text and HTML are all rendered inside ``translation.override``, and dates
are formatted there too, so "2. Dezember 2026" or "2 grudnia 2026" follow the language's own date format.
"""

from __future__ import annotations

from datetime import date, datetime

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext, pgettext_lazy

from gdpr_requests.audit.queries import last_actor_type
from gdpr_requests.models import DataSubjectRequest, Regulation, RequestKind, RequestRejection
from gdpr_requests.requests import download_codes, states, tokens

# Transitions (services hook actions) that the subject hears about; the action name is the event name.
TRANSITION_EVENTS = frozenset({"verify", "extend", "complete", "reject", "cancel", "expire"})
REPEATABLE_EVENTS = frozenset({"duplicate", "resend", "download_code"})
# The emails that carry the request's link and that anyone can cause by typing an address into a public form.
LINK_EVENTS = frozenset({"created", "resend", "duplicate"})

SUBJECTS = {
    "created": _("Please confirm your privacy request {reference}"),
    "verify": _("We have confirmed your privacy request {reference}"),
    "extend": _("We need more time for your privacy request {reference}"),
    "complete": _("Your privacy request {reference} is complete"),
    "reject": _("We could not carry out your privacy request {reference}"),
    "cancel": _("Your privacy request {reference} has been withdrawn"),
    "expire": _("Your privacy request {reference} has expired"),
    "duplicate": _("You already have an open privacy request ({reference})"),
    "resend": _("Your new link for privacy request {reference}"),
    "download_code": _("Your download code for privacy request {reference}"),
}
# What the request is for, as it reads inside a sentence ("your request for a copy of your data").
KIND_IN_SENTENCE = {
    RequestKind.ACCESS: pgettext_lazy("your request for ...", "a copy of your data"),
    RequestKind.DELETION: pgettext_lazy("your request for ...", "deletion of your data"),
}


def subject_language(request: DataSubjectRequest) -> str:
    """The language to write to the subject in: theirs, or LANGUAGE_CODE if it is no longer offered."""
    if request.language in dict(settings.LANGUAGES):
        return request.language
    return settings.LANGUAGE_CODE


def localised_day(value: date | datetime) -> str:
    """A date in the active language's own format ("2 December 2026", "2. Dezember 2026")."""
    if isinstance(value, datetime):
        value = timezone.localtime(value)
    return date_format(value, "DATE_FORMAT")


def _strong(value: object) -> SafeString:
    return format_html("<strong>{}</strong>", value)


def event_base(event: str) -> str:
    base, _, suffix = event.partition(":")
    if base in REPEATABLE_EVENTS and suffix.isdigit():
        return base
    if base in TRANSITION_EVENTS or base == "created":
        return base if not suffix else ""
    return ""


def _context(request: DataSubjectRequest, event: str) -> dict | None:
    """What the template of ``event`` needs, or None when there is nothing to send any more."""
    unverified = request.status == states.UNVERIFIED
    kind_label = str(KIND_IN_SENTENCE.get(RequestKind(request.kind), request.kind))
    due_day = localised_day(request.due_at)
    context = {
        "request": request,
        "reference": request.reference,
        # Until the address is confirmed, anyone may have typed it: the email repeats none of their free text
        # (a "name" like "your account is locked, call ...") and greets neutrally.
        "name": request.requester_name if request.verified_at else "",
        "kind": request.kind,
        "is_access": request.kind == RequestKind.ACCESS,
        "kind_label": kind_label,
        "due_at": request.due_at,
        # The same sentences serve the text and the HTML email: the HTML one gets its emphasis from the values.
        "kind_strong": _strong(kind_label),
        "due_day": due_day,
        "due_strong": _strong(due_day),
        "reference_html": format_html('<span style="white-space:nowrap;">{}</span>', request.reference),
        "contact_html": format_html(
            '<a href="mailto:{0}" style="color:#2d4fc4;">{0}</a>', settings.PRIVACY_CONTACT_EMAIL
        ),
        "organisation": settings.ORGANISATION_NAME,
        "contact_email": settings.PRIVACY_CONTACT_EMAIL,
        "site_url": settings.SITE_URL,
        "form_url": f"{settings.SITE_URL}{reverse('portal:request')}",
        "verification_hours": settings.DSR_VERIFICATION_HOURS,
        "status_url": "",
        "verification_url": "",
    }
    if event in LINK_EVENTS and unverified:
        context["verification_url"] = tokens.verification_url(request)
    elif event != "expire":
        context["status_url"] = tokens.status_url(request)
    if event == "reject":
        # The ground in the law's words, and the rights the request's own regulation gives (rejection emails).
        rejection = RequestRejection.objects.filter(request=request).first()
        context["ground_label"] = rejection.get_ground_display() if rejection else ""
        context["is_ccpa"] = request.regulation == Regulation.CCPA
    if event == "cancel":
        last_cancel = last_actor_type(request.reference, "request.cancel")
        context["by_subject"] = last_cancel in {"subject", ""}
    if event == "complete" and request.kind == RequestKind.ACCESS:
        export = download_codes.export_for(request)
        if export is not None and export.is_available:
            context["download_url"] = tokens.download_url(request)
            context["export_expires_at"] = export.expires_at
            context["export_expires_day"] = localised_day(export.expires_at)
            context["export_expires_strong"] = _strong(context["export_expires_day"])
    if event == "download_code":
        export = download_codes.export_for(request)
        if export is None or not export.is_available:
            return None
        context["code"] = download_codes.export_code_issue(export=export)
        context["code_minutes"] = int(download_codes.CODE_LIFETIME.total_seconds() // 60)
        context["download_url"] = tokens.download_url(request)
        context["download_link_html"] = format_html(
            '<a href="{}" style="color:#2d4fc4;">{}</a>',
            context["download_url"],
            pgettext("email link: Enter it on the ...", "download page"),
        )
    return context


def build_message(request: DataSubjectRequest, event: str) -> EmailMultiAlternatives | None:
    """The email for ``event`` (a base event name) in the subject's language, or None when there is nothing to send."""
    with translation.override(subject_language(request)):
        context = _context(request, event)
        if context is None:
            return None
        subject = str(SUBJECTS[event]).format(reference=request.reference)
        text = render_to_string(f"emails/{event}.txt", context)
        html = render_to_string(f"emails/{event}.html", {**context, "subject": subject})
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[request.requester_email],
        reply_to=[settings.PRIVACY_CONTACT_EMAIL],
        headers={
            "Auto-Submitted": "auto-generated",
            "X-Auto-Response-Suppress": "All",
            "Content-Language": subject_language(request),
        },
    )
    message.attach_alternative(html, "text/html")
    return message
