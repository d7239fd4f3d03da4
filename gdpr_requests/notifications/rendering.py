"""The emails to data subjects, built from templates/emails/ when they are sent (never before: the row holds no
personal data, and a download code is made at this moment so that it never travels through the broker)."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from gdpr_requests.audit.queries import last_actor_type
from gdpr_requests.models import DataSubjectRequest, Regulation, RequestKind, RequestRejection
from gdpr_requests.requests import download_codes, states, tokens

# Transitions (services hook actions) that the subject hears about; the action name is the event name.
TRANSITION_EVENTS = frozenset({"verify", "extend", "complete", "reject", "cancel", "expire"})
REPEATABLE_EVENTS = frozenset({"duplicate", "resend", "download_code"})
# The emails that carry the request's link and that anyone can cause by typing an address into a public form.
LINK_EVENTS = frozenset({"created", "resend", "duplicate"})

SUBJECTS = {
    "created": "Please confirm your privacy request {reference}",
    "verify": "We have confirmed your privacy request {reference}",
    "extend": "We need more time for your privacy request {reference}",
    "complete": "Your privacy request {reference} is complete",
    "reject": "We could not carry out your privacy request {reference}",
    "cancel": "Your privacy request {reference} has been withdrawn",
    "expire": "Your privacy request {reference} has expired",
    "duplicate": "You already have an open privacy request ({reference})",
    "resend": "Your new link for privacy request {reference}",
    "download_code": "Your download code for privacy request {reference}",
}


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
    context = {
        "request": request,
        "reference": request.reference,
        # Until the address is confirmed, anyone may have typed it: the email repeats none of their free text
        # (a "name" like "your account is locked, call ...") and greets neutrally.
        "name": request.requester_name if request.verified_at else "",
        "kind": request.kind,
        "is_access": request.kind == RequestKind.ACCESS,
        "kind_label": "a copy of your data" if request.kind == RequestKind.ACCESS else "deletion of your data",
        "due_at": request.due_at,
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
    if event == "download_code":
        export = download_codes.export_for(request)
        if export is None or not export.is_available:
            return None
        context["code"] = download_codes.export_code_issue(export=export)
        context["code_minutes"] = int(download_codes.CODE_LIFETIME.total_seconds() // 60)
        context["download_url"] = tokens.download_url(request)
    return context


def build_message(request: DataSubjectRequest, event: str) -> EmailMultiAlternatives | None:
    """The email for ``event`` (a base event name), or None when there is nothing to send."""
    context = _context(request, event)
    if context is None:
        return None
    subject = SUBJECTS[event].format(reference=request.reference)
    text = render_to_string(f"emails/{event}.txt", context)
    html = render_to_string(f"emails/{event}.html", {**context, "subject": subject})
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[request.requester_email],
        reply_to=[settings.PRIVACY_CONTACT_EMAIL],
        headers={"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"},
    )
    message.attach_alternative(html, "text/html")
    return message
