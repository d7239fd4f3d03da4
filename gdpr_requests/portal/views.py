"""The public portal: start page, request form, email verification, status page, withdrawal and download.

Pages reached through a signed link (verify, status, withdraw, download) never go into a cache or a Referer
header, and every problem with a link gets a page that says what to do next rather than an error code alone.
The request form and the "new link" form answer with the same page whatever was entered, so nobody learns
from them whether an address is known.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import decorator_from_middleware
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext, pgettext_lazy
from django.views import i18n
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from gdpr_requests.models import AuditEvent, DataSubjectRequest, RequestKind, SubjectExport
from gdpr_requests.portal import ratelimit as ratelimit_public
from gdpr_requests.portal import services as portal_services
from gdpr_requests.portal.forms import DataRequestForm, DownloadCodeForm, ResendLinkForm
from gdpr_requests.portal.ratelimit import PublicRateLimited
from gdpr_requests.requests import download_codes, exports, services, states, tokens

PUBLIC_STATUS = {
    states.UNVERIFIED: gettext_lazy("Waiting for you to confirm your email address"),
    states.VERIFIED: gettext_lazy("In review"),
    states.ON_HOLD: gettext_lazy("In review"),
    states.APPROVED: gettext_lazy("In progress"),
    states.PROCESSING: gettext_lazy("In progress"),
    states.FAILED: gettext_lazy("In progress"),
    states.COMPLETED: gettext_lazy("Completed"),
    states.REJECTED: gettext_lazy("Rejected"),
    states.CANCELLED: gettext_lazy("Withdrawn"),
    states.EXPIRED: gettext_lazy("Expired"),
}
# What a link in our emails is called on the page that says it does not work.
LINK_NAMES = {
    "link": pgettext_lazy("the ... in our email", "link"),
    "confirmation link": pgettext_lazy("the ... in our email", "confirmation link"),
    "status link": pgettext_lazy("the ... in our email", "status link"),
    "download link": pgettext_lazy("the ... in our email", "download link"),
}


class _NoReferrerPageCsrf(CsrfViewMiddleware):
    """Django's CSRF check for forms on pages sent with ``Referrer-Policy: no-referrer``.

    From such a page a browser posts with ``Origin: null`` and no Referer (the Fetch standard), so Django's origin
    and (HTTPS) Referer checks cannot pass. This keeps the real defence, the secret token in the form matched
    against the CSRF cookie, and still refuses a foreign Origin or Referer; it only accepts a null or missing
    one. The forms it guards sit on URLs that carry the request's signed link: a cross-site attacker would need
    that link to aim at them in the first place.
    """

    def _origin_verified(self, request: HttpRequest) -> bool:
        return request.META.get("HTTP_ORIGIN") == "null" or super()._origin_verified(request)

    def _check_referer(self, request: HttpRequest) -> None:
        if request.META.get("HTTP_REFERER"):
            super()._check_referer(request)


def no_referrer_csrf(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Guard ``view`` with _NoReferrerPageCsrf instead of the global CSRF middleware."""
    return csrf_exempt(decorator_from_middleware(_NoReferrerPageCsrf)(view))


def _private(response: HttpResponse) -> HttpResponse:
    """Headers for pages that carry a secret in their URL or show a person's request."""
    add_never_cache_headers(response)  # includes no-store
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def token_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return _private(view(request, *args, **kwargs))

    return wrapper


def too_many(request: HttpRequest, exc: PublicRateLimited) -> HttpResponse:
    minutes = max(1, (exc.retry_after + 59) // 60)
    response = render(request, "portal/rate_limited.html", {"minutes": minutes}, status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a page a person can act on (usually an old tab or blocked cookies)."""
    return _private(render(request, "portal/csrf_failure.html", status=403))


def _link_problem(request: HttpRequest, reason: str, *, status: int, what: str = "link") -> HttpResponse:
    context = {"reason": reason, "what": LINK_NAMES[what], "form": ResendLinkForm()}
    return render(request, "portal/link_problem.html", context, status=status)


def _link_status(reason: str) -> int:
    return 410 if reason in {tokens.EXPIRED, tokens.USED} else 404


# --- Start page and form ----------------------------------------------------------------------------
@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico whatever the page links to: send them to the static SVG icon."""
    response = HttpResponsePermanentRedirect(static("gdpr_requests/favicon.svg"))
    response["Cache-Control"] = "public, max-age=86400"
    return response


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/home.html")


@require_http_methods(["GET", "HEAD", "POST"])
def request_form(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = DataRequestForm(request.POST, client_ip=ratelimit_public.client_ip(request))
        try:
            valid = form.is_valid()
        except PublicRateLimited as exc:
            return too_many(request, exc)
        if valid:
            if not form.is_bot:
                try:
                    # The emails about this request will be written in the language the form was shown in.
                    portal_services.request_submit(**form.submission(), language=request.LANGUAGE_CODE)
                except services.ServiceError as exc:
                    form.add_error(None, _in_page_language(str(exc)))
            if not form.errors:
                # The same redirect whether the request is new, a duplicate, or a bot's.
                return redirect("portal:request_sent")
    else:
        form = DataRequestForm()
    return render(request, "portal/request_form.html", {"form": form})


def _check_email_context(*, resent: bool) -> dict[str, Any]:
    return {"resent": resent, "DSR_VERIFICATION_HOURS": settings.DSR_VERIFICATION_HOURS}


@require_safe
def request_sent(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/check_email.html", _check_email_context(resent=False))


@no_referrer_csrf
@require_http_methods(["GET", "HEAD", "POST"])
def resend_link(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = ResendLinkForm(request.POST, client_ip=ratelimit_public.client_ip(request))
        try:
            valid = form.is_valid()
        except PublicRateLimited as exc:
            return _private(too_many(request, exc))
        if valid:
            if not form.is_bot:
                portal_services.request_resend_links(email=form.cleaned_data["email"])
            return redirect("portal:links_sent")
    else:
        form = ResendLinkForm()
    return _private(render(request, "portal/resend.html", {"form": form}))


@require_safe
def links_sent(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/check_email.html", _check_email_context(resent=True))


# --- Verification -----------------------------------------------------------------------------------
@no_referrer_csrf
@token_page
@require_http_methods(["GET", "HEAD", "POST"])
def verify(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a confirm button and changes nothing (mail scanners open links); POST confirms."""
    try:
        dsr = tokens.read_token(token, tokens.VERIFY)
    except tokens.LinkError as exc:
        return _link_problem(request, exc.reason, status=_link_status(exc.reason), what="confirmation link")
    if request.method == "POST":
        try:
            dsr = services.request_confirm_email(request=dsr)
        except (states.TransitionNotAllowed, services.ServiceError):
            # Confirmed (or closed) between the GET and this POST, e.g. in another tab.
            return _link_problem(request, tokens.USED, status=410, what="confirmation link")
        status_path = reverse("portal:status", args=[tokens.make_token(dsr, tokens.STATUS)])
        return redirect(f"{status_path}?confirmed=1")
    return render(request, "portal/verify.html", {"dsr": dsr, "kind_label": _kind_label(dsr)})


# --- Status and withdrawal --------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    title: str
    state: str  # done, current, upcoming, problem
    when: datetime | date | None = None
    detail: str = ""

    @property
    def state_label(self) -> str:
        return {
            "done": pgettext("timeline step", "Done"),
            "current": pgettext("timeline step", "Now"),
            "upcoming": pgettext("timeline step", "Next"),
            "problem": pgettext("timeline step", "Closed"),
        }[self.state]


def _day(value: date) -> str:
    return date_format(value, "DATE_FORMAT")


def _kind_label(dsr: DataSubjectRequest) -> str:
    if dsr.kind == RequestKind.ACCESS:
        return pgettext("you asked for ...", "a copy of your data")
    return pgettext("you asked for ...", "deletion of your data")


def _in_page_language(reason: str) -> str:
    """A reason the services wrote (in English, for staff as much as for subjects) as the page can show it."""
    if translation.get_language().startswith("en"):
        return reason
    return _("We could not take your request as it was entered. Check the details and try again.")


def _public_reason(reason: str, dsr: DataSubjectRequest) -> str:
    """Why the subject cannot withdraw, in the page's language ("" when they can). The services write their
    reasons in English, for staff as much as for subjects; in another language the subject gets their meaning."""
    if not reason or translation.get_language().startswith("en"):
        return reason
    if not dsr.is_open:
        return _("This request is closed, so there is nothing left to withdraw.")
    return _("We have already started carrying out this request, so it can no longer be withdrawn.")


def _verified_title(dsr: DataSubjectRequest) -> str:
    """Staff may confirm who the requester is (e.g. a request by letter): then no email address was confirmed."""
    verification = (
        AuditEvent.objects.filter(request_reference=dsr.reference, action="request.verify")
        .order_by("-sequence")
        .values_list("actor_type", "payload")
        .first()
    )
    if verification is not None:
        actor_type, payload = verification
        if actor_type == "staff" or (isinstance(payload, dict) and payload.get("method") == "staff"):
            return _("Identity confirmed by our staff")
    return _("Email address confirmed")


def public_timeline(dsr: DataSubjectRequest) -> list[Step]:
    """The steps a subject sees, from the request's fields and its audit events (no internal detail)."""
    times = dict(
        AuditEvent.objects.filter(
            request_reference=dsr.reference,
            action__in=["request.start_processing", "request.complete", "request.reject", "request.cancel"],
        )
        .order_by("sequence")
        .values_list("action", "occurred_at")
    )
    status = dsr.status
    closed_early = status in {states.REJECTED, states.CANCELLED, states.EXPIRED}
    steps = [Step(_("Request received"), "done", dsr.received_at)]

    if dsr.verified_at:
        steps.append(Step(_verified_title(dsr), "done", dsr.verified_at))
    elif status == states.UNVERIFIED:
        steps.append(
            Step(
                _("Confirm your email address"),
                "current",
                None,
                _("Open the link in the email we sent you to confirm."),
            )
        )
    in_review_done = dsr.approved_at is not None
    if in_review_done:
        steps.append(Step(_("Reviewed by our privacy team"), "done", dsr.approved_at))
    elif status in {states.VERIFIED, states.ON_HOLD}:
        steps.append(Step(_("In review"), "current", None, _("Our privacy team is checking your request.")))
    elif not closed_early:
        steps.append(Step(_("In review"), "upcoming", None, _("Our privacy team checks your request.")))

    started = times.get("request.start_processing")
    if status in {states.APPROVED, states.PROCESSING, states.FAILED}:
        steps.append(Step(_("In progress"), "current", started, _("We are carrying out your request.")))
    elif status == states.COMPLETED:
        steps.append(Step(_("In progress"), "done", started))
    elif not closed_early:
        steps.append(Step(_("In progress"), "upcoming", None, _("We carry out your request in our systems.")))

    if dsr.extended_at:
        steps.append(
            Step(
                _("Deadline extended"),
                "done",
                dsr.extended_at,
                _("New date: %(date)s. Why: %(reason)s") % {"date": _day(dsr.due_at), "reason": dsr.extension_reason},
            )
        )

    if status == states.COMPLETED:
        steps.append(Step(_("Completed"), "done", dsr.closed_at, ""))
    elif status == states.REJECTED:
        steps.append(Step(_("Rejected"), "problem", dsr.closed_at, dsr.rejection_reason))
    elif status == states.CANCELLED:
        steps.append(Step(_("Withdrawn"), "problem", dsr.closed_at, _("This request was withdrawn and is closed.")))
    elif status == states.EXPIRED:
        steps.append(
            Step(
                _("Expired"),
                "problem",
                dsr.closed_at,
                _("The email address was not confirmed in time, so we closed it."),
            )
        )
    else:
        steps.append(
            Step(_("Completed"), "upcoming", None, _("We will finish by %(date)s.") % {"date": _day(dsr.due_at)})
        )
    return steps


def _status_context(dsr: DataSubjectRequest, token: str) -> dict[str, Any]:
    export = download_codes.export_for(dsr)
    return {
        "dsr": dsr,
        "token": token,
        "public_status": PUBLIC_STATUS.get(dsr.status, dsr.get_status_display()),
        "steps": public_timeline(dsr),
        "kind_label": _kind_label(dsr),
        "withdraw_blocker": _public_reason(services.withdrawal_blocker(dsr), dsr),
        "export": export if export is not None and export.is_available else None,
        "download_path": reverse("portal:download", args=[tokens.make_token(dsr, tokens.DOWNLOAD)])
        if export is not None and export.is_available
        else "",
    }


@token_page
@require_safe
def status(request: HttpRequest, token: str) -> HttpResponse:
    try:
        dsr = tokens.read_token(token, tokens.STATUS)
    except tokens.LinkError as exc:
        return _link_problem(request, exc.reason, status=_link_status(exc.reason), what="status link")
    context = _status_context(dsr, token)
    context["confirmed"] = request.GET.get("confirmed") == "1"
    context["withdrawn"] = request.GET.get("withdrawn") == "1"
    return render(request, "portal/status.html", context)


@no_referrer_csrf
@token_page
@require_http_methods(["GET", "HEAD", "POST"])
def withdraw(request: HttpRequest, token: str) -> HttpResponse:
    """GET asks "are you sure?"; POST withdraws the request while that is still possible."""
    try:
        dsr = tokens.read_token(token, tokens.STATUS)
    except tokens.LinkError as exc:
        return _link_problem(request, exc.reason, status=_link_status(exc.reason), what="status link")
    error = ""
    if request.method == "POST":
        try:
            ratelimit_public.check("withdraw", ip=ratelimit_public.client_ip(request))
        except PublicRateLimited as exc:
            return too_many(request, exc)
        try:
            portal_services.request_withdraw(request=dsr)
        except (services.ServiceError, states.TransitionNotAllowed) as exc:
            dsr.refresh_from_db()
            error = (
                _public_reason(str(exc), dsr)
                if isinstance(exc, services.ServiceError)
                else _("Your request has moved on, so it can no longer be withdrawn here.")
            )
        else:
            return redirect(f"{reverse('portal:status', args=[token])}?withdrawn=1")
    context = _status_context(dsr, token)
    context["error"] = error or context["withdraw_blocker"]
    return render(request, "portal/withdraw.html", context, status=409 if error else 200)


# --- Download of access results ---------------------------------------------------------------------
def _download_target(token: str) -> tuple[DataSubjectRequest, SubjectExport | None]:
    dsr = tokens.read_token(token, tokens.DOWNLOAD)
    export = download_codes.export_for(dsr)
    return dsr, export if export is not None and export.is_available else None


def _file_description(export: SubjectExport) -> str:
    if export.content_type == "application/json":
        return _("a JSON file")
    return _("a ZIP file of JSON files")


def _code_minutes() -> int:
    return int(download_codes.CODE_LIFETIME.total_seconds() // 60)


def _download_page(
    request: HttpRequest,
    dsr: DataSubjectRequest,
    export: SubjectExport,
    token: str,
    *,
    form: DownloadCodeForm | None,
    status: int = 200,
    notice: str = "",
    code_sent: bool | None = None,
) -> HttpResponse:
    if code_sent is None:
        code_sent = request.GET.get("sent") == "1" or form is not None
    context = {
        "dsr": dsr,
        "export": export,
        "token": token,
        "form": form or DownloadCodeForm(),
        "code_sent": code_sent,
        "notice": notice,
        "file_description": _file_description(export),
        "is_json": export.content_type == "application/json",
        "code_minutes": _code_minutes(),
    }
    return render(request, "portal/download.html", context, status=status)


def _gone(request: HttpRequest, dsr: DataSubjectRequest | None) -> HttpResponse:
    return render(request, "portal/download_gone.html", {"dsr": dsr}, status=410)


def _open_download_link(request: HttpRequest, token: str) -> tuple[DataSubjectRequest, SubjectExport] | HttpResponse:
    """The request and its available export behind a download link, or the page that explains why not."""
    try:
        dsr, export = _download_target(token)
    except tokens.LinkError as exc:
        if exc.reason == tokens.EXPIRED:
            return _gone(request, None)
        return _link_problem(request, exc.reason, status=404, what="download link")
    if export is None:
        return _gone(request, dsr)
    return dsr, export


@no_referrer_csrf
@token_page
@require_http_methods(["GET", "HEAD", "POST"])
def download(request: HttpRequest, token: str) -> HttpResponse:
    """GET explains the file and offers a code; POST checks the code and streams the file."""
    target = _open_download_link(request, token)
    if isinstance(target, HttpResponse):
        return target
    dsr, export = target
    if request.method != "POST":
        return _download_page(request, dsr, export, token, form=None)

    try:
        ratelimit_public.check("code_entry", ip=ratelimit_public.client_ip(request), subject_key=dsr.reference)
    except PublicRateLimited as exc:
        return too_many(request, exc)
    form = DownloadCodeForm(request.POST)
    if not form.is_valid():
        return _download_page(request, dsr, export, token, form=form, status=400)
    try:
        # A file gone from disk gets its page before a code is spent on it.
        exports.export_open(export).close()
    except FileNotFoundError:
        return _gone(request, dsr)
    result = download_codes.export_download_authorise(export=export, code=form.cleaned_data["code"])
    if result == download_codes.CodeResult.OK:
        # Post/redirect/get: the page the person sees next says the download started, instead of the form
        # (with its earlier error) staying on screen while the browser saves the file.
        export.refresh_from_db()
        started = reverse("portal:download_started", args=[token])
        return redirect(f"{started}?ticket={_make_ticket(export)}", permanent=False)
    # Each message says what to do next. "Ask for a new code" points at step 1's button, whose label says
    # "Email me a code" when no code is waiting.
    message, code_waiting = {
        download_codes.CodeResult.WRONG: (
            _("That code is not right. Check the code in the latest email from us and type it again."),
            True,
        ),
        download_codes.CodeResult.LOCKED: (
            _(
                "That code was entered wrongly too many times, so it no longer works. "
                "Use \u201cEmail me a code\u201d above to get a new one."
            ),
            False,
        ),
        download_codes.CodeResult.EXPIRED: (
            _(
                "That code has expired (codes work for %(minutes)s minutes). "
                "Use \u201cEmail me a code\u201d above to get a new one."
            )
            % {"minutes": _code_minutes()},
            False,
        ),
        download_codes.CodeResult.NO_CODE: (
            _(
                "That code has already been used, or no code is waiting. Each code works once: "
                "use \u201cEmail me a code\u201d above to get a new one."
            ),
            False,
        ),
    }.get(result, ("", False))
    if not message:
        return _gone(request, dsr)
    form.add_error("code", message)
    return _download_page(request, dsr, export, token, form=form, status=400, code_sent=code_waiting)


# A download ticket lets the browser fetch the file with a GET right after the code was accepted (the
# "download started" page points at it). It is signed, bound to the export and to the download it counted,
# short-lived, and used once (the shared cache remembers used ones).
TICKET_SALT = "gdpr_requests.portal.download-ticket"
TICKET_SECONDS = 300


def _make_ticket(export: SubjectExport) -> str:
    return signing.dumps({"e": export.pk, "n": export.download_count, "x": secrets.token_urlsafe(12)}, salt=TICKET_SALT)


def _read_ticket(export: SubjectExport, ticket: str) -> str | None:
    """The ticket's one-time key when it is genuine, recent and for this export's latest download."""
    try:
        data = signing.loads(ticket, salt=TICKET_SALT, max_age=TICKET_SECONDS)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("e") != export.pk or data.get("n") != export.download_count:
        return None
    return f"portal:download-ticket:{data.get('x')}"


def _ticketed_download(
    request: HttpRequest, token: str
) -> HttpResponse | tuple[DataSubjectRequest, SubjectExport, str | None]:
    """The download link's request and export with the ticket's one-time key (None: no valid ticket), or the page
    that answers a link that does not work."""
    target = _open_download_link(request, token)
    if isinstance(target, HttpResponse):
        return target
    dsr, export = target
    return dsr, export, _read_ticket(export, request.GET.get("ticket", ""))


def _ticket_unused(key: str) -> bool:
    return cache.get(key) is None


def _ticket_use(key: str) -> bool:
    return cache.add(key, 1, timeout=TICKET_SECONDS * 2)


@no_referrer_csrf
@token_page
@require_safe
def download_started(request: HttpRequest, token: str) -> HttpResponse:
    """Says the download started, and starts it (a Refresh header: the page works without scripts)."""
    target = _ticketed_download(request, token)
    if isinstance(target, HttpResponse):
        return target
    dsr, export, key = target
    if key is None:  # an old or edited address: no download started, so the page would be untrue
        return redirect("portal:download", token=token)
    file_path = ""
    if _ticket_unused(key):
        file_path = f"{reverse('portal:download_file', args=[token])}?ticket={request.GET['ticket']}"
    context = {
        "dsr": dsr,
        "export": export,
        "token": token,
        "file_path": file_path,
        "days_left": max(0, (export.expires_at - timezone.now()).days) if export.expires_at else None,
    }
    response = render(request, "portal/download_started.html", context)
    if file_path:
        response["Refresh"] = f"0; url={file_path}"
    return response


@no_referrer_csrf
@token_page
@require_safe
def download_file(request: HttpRequest, token: str) -> HttpResponse:
    """Stream the file for a ticket from the "download started" page (once; the code counted the download)."""
    target = _ticketed_download(request, token)
    if isinstance(target, HttpResponse):
        return target
    dsr, export, key = target
    if key is None or not _ticket_unused(key):
        return _download_page(
            request,
            dsr,
            export,
            token,
            form=None,
            status=410,
            notice=_(
                "That download link has been used or has expired. To download the file again, "
                "use \u201cEmail me a code\u201d below and enter the new code."
            ),
        )
    try:
        handle = exports.export_open(export)
    except FileNotFoundError:
        return _gone(request, dsr)
    if request.method == "HEAD":
        handle.close()
        return HttpResponse(content_type=export.content_type or "application/octet-stream")
    if not _ticket_use(key):
        handle.close()
        return redirect("portal:download", token=token)
    extension = "json" if export.content_type == "application/json" else "zip"
    return FileResponse(
        handle,
        as_attachment=True,
        filename=f"{dsr.reference}-your-data.{extension}",
        content_type=export.content_type or "application/octet-stream",
    )


@no_referrer_csrf
@token_page
@require_POST
def download_code(request: HttpRequest, token: str) -> HttpResponse:
    """Email a fresh one-time code to the address of the request."""
    target = _open_download_link(request, token)
    if isinstance(target, HttpResponse):
        return target
    dsr, export = target
    try:
        ratelimit_public.check("code_send", ip=ratelimit_public.client_ip(request), subject_key=dsr.reference)
    except PublicRateLimited as exc:
        return too_many(request, exc)
    portal_services.export_code_request(export=export)
    return redirect(f"{reverse('portal:download', args=[token])}?sent=1#code")


@csrf_exempt
@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """Django's set_language: the language cookie, then back to ``next`` (a path on this site).

    Without a CSRF token, on purpose: a forged post can only change the display language, and a token in the
    switcher would put a per-visitor value in every public page (no shared caching, and pages that must read the
    same for known and unknown addresses would differ). ``next`` may carry a signed link: never cached.
    """
    return _private(i18n.set_language(request))
