"""The auditor area (/reports/): audit trail export, compliance summary, evidence packs.

Open to members of "Auditors" and "Privacy staff" and to superusers; anyone else signed in gets 403 and an
anonymous visitor goes to the admin login page. Every report shown or downloaded is recorded in the audit
trail (``report_record_access``) before its content is produced, so an export includes its own event.
Nothing here changes data other than that audit event.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date
from typing import Any

from django import forms
from django.contrib.auth.views import redirect_to_login
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from gdpr_requests.audit import chain as audit_chain
from gdpr_requests.audit.export import FORMATS, ExportError, export_lines, export_manifest, manifest_text
from gdpr_requests.models import AuditEvent, DataSubjectRequest
from gdpr_requests.reports import (
    EvidenceNotFound,
    build_evidence_pack,
    build_summary,
    evidence_json,
    report_record_access,
)
from gdpr_requests.reports.evidence import normalise_reference
from gdpr_requests.reports.pdf import (
    PdfFontsMissing,
    chart_svg_data_uri,
    register_fonts,
    render_evidence_pdf,
    render_summary_pdf,
    summary_charts,
)
from gdpr_requests.reports.summary import GRANULARITIES, MONTH, PeriodError, default_period, validate_period

REPORT_GROUPS = ("Auditors", "Privacy staff")
# The only format an <input type="date"> accepts (the locale's "01/10/2026" would leave the box empty).
ISO_DATE = "%Y-%m-%d"


def can_read_reports(user: Any) -> bool:
    return bool(
        user.is_authenticated
        and user.is_active
        and (user.is_superuser or user.groups.filter(name__in=REPORT_GROUPS).exists())
    )


def auditor_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous → the admin login page (then back here); signed in without the role → 403."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not can_read_reports(request.user):
            return render(request, "reports/forbidden.html", status=403)
        return view(request, *args, **kwargs)

    return require_GET(wrapper)


def _no_store(response: HttpResponse) -> HttpResponse:
    # Reports can name references and staff: keep them out of shared caches and browser history caches.
    response["Cache-Control"] = "no-store, private"
    return response


def _fonts_missing(request: HttpRequest, exc: PdfFontsMissing) -> HttpResponse:
    return render(request, "reports/error.html", {"title": "PDF unavailable", "message": str(exc)}, status=503)


# --- Index --------------------------------------------------------------------------------------------
@auditor_required
def index(request: HttpRequest) -> HttpResponse:
    return _no_store(
        render(request, "reports/index.html", {"export_form": ExportForm(), "summary_form": SummaryForm()})
    )


# --- Audit trail export -------------------------------------------------------------------------------
class ExportForm(forms.Form):
    since = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}, format=ISO_DATE), label="From (included)"
    )
    until = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}, format=ISO_DATE), label="To (included)"
    )
    action = forms.CharField(
        required=False,
        max_length=64,
        help_text="An exact action such as request.approve, or a prefix ending with * (request.*).",
    )
    reference = forms.CharField(required=False, max_length=16, help_text="A request reference, e.g. DSR-7K4Q-9XWM.")
    actor = forms.CharField(
        required=False, max_length=150, help_text="A username, a system component, or a type (staff, system...)."
    )
    format = forms.ChoiceField(choices=[("csv", "CSV (spreadsheets)"), ("jsonl", "JSON Lines (verifiable)")])
    # The chain head when the form was shown: the export and its manifest, downloaded one after the other,
    # then cover the same events (each download adds its own event to the trail).
    upto = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def clean_reference(self) -> str:
        value = self.cleaned_data["reference"].strip()
        if not value:
            return ""
        try:
            return normalise_reference(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError("The date range ends before it starts.")
        return data


CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


@auditor_required
def audit_trail(request: HttpRequest) -> HttpResponse:
    """The export form; with ``format`` in the query, the streamed export itself."""
    if "format" not in request.GET:
        form = ExportForm(initial={"upto": audit_chain.chain_head()[0]})
        return _no_store(render(request, "reports/audit_trail.html", {"form": form, **_action_hints()}))
    form = ExportForm(request.GET)
    if not form.is_valid():
        return _no_store(render(request, "reports/audit_trail.html", {"form": form, **_action_hints()}, status=400))
    data = form.cleaned_data
    fmt = data["format"]
    filters = {
        "since": data["since"],
        "until": data["until"],
        "action": data["action"].strip(),
        "reference": data["reference"],
        "actor": data["actor"].strip(),
    }
    scope = {name: value.isoformat() if isinstance(value, date) else (value or None) for name, value in filters.items()}
    want_manifest = request.GET.get("manifest") == "1"
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    report_record_access(
        user=request.user, report="audit_trail", fmt=f"{fmt}-manifest" if want_manifest else fmt, scope=scope
    )
    if want_manifest:
        try:
            manifest = export_manifest(fmt=fmt, upto=data["upto"], **filters)
        except ExportError as exc:
            form.add_error(None, str(exc))
            return _no_store(render(request, "reports/audit_trail.html", {"form": form, **_action_hints()}, status=400))
        response = HttpResponse(manifest_text(manifest), content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="audit-trail-{stamp}.{fmt}.manifest.json"'
        return _no_store(response)
    try:
        chunks = export_lines(fmt=fmt, upto=data["upto"], **filters)
    except ExportError as exc:
        form.add_error(None, str(exc))
        return _no_store(render(request, "reports/audit_trail.html", {"form": form, **_action_hints()}, status=400))
    response = StreamingHttpResponse(chunks, content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="audit-trail-{stamp}.{fmt}"'
    return _no_store(response)


def _action_hints() -> dict[str, Any]:
    # Distinct action names for the form's suggestions; an index scan, cheap even for millions of events.
    actions = AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct()[:200]
    return {"actions": list(actions), "formats": FORMATS}


# --- Compliance summary -------------------------------------------------------------------------------
class SummaryForm(forms.Form):
    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}, format=ISO_DATE), label="From (included)")
    end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}, format=ISO_DATE), label="To (included)")
    granularity = forms.ChoiceField(choices=[(g, f"per {g}") for g in GRANULARITIES], initial=MONTH, label="Group")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        start, end = default_period()
        self.fields["start"].initial = start
        self.fields["end"].initial = end

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.errors:
            try:
                validate_period(data["start"], data["end"], data["granularity"])
            except PeriodError as exc:
                raise forms.ValidationError(str(exc)) from None
        return data


def _summary_from(request: HttpRequest) -> tuple[SummaryForm, Any]:
    """The form bound to the query (the default period when there is none) and the summary, or None."""
    if "start" in request.GET or "end" in request.GET:
        form = SummaryForm(request.GET)
    else:
        start, end = default_period()
        form = SummaryForm({"start": start, "end": end, "granularity": MONTH})
    if not form.is_valid():
        return form, None
    data = form.cleaned_data
    summary = build_summary(
        start=data["start"],
        end=data["end"],
        granularity=data["granularity"],
        generated_by=request.user.get_username(),
    )
    return form, summary


@auditor_required
def summary_page(request: HttpRequest) -> HttpResponse:
    form, summary = _summary_from(request)
    if summary is None:
        return _no_store(render(request, "reports/summary.html", {"form": form}, status=400))
    report_record_access(user=request.user, report="compliance_summary", fmt="html", scope=summary.scope())
    charts = {name: chart_svg_data_uri(drawing) for name, drawing in summary_charts(summary).items()}
    return _no_store(
        render(
            request,
            "reports/summary.html",
            {"form": form, "summary": summary, "charts": charts, "query": request.GET.urlencode()},
        )
    )


@auditor_required
def summary_pdf(request: HttpRequest) -> HttpResponse:
    form, summary = _summary_from(request)
    if summary is None:
        return _no_store(render(request, "reports/summary.html", {"form": form}, status=400))
    try:
        content = render_summary_pdf(summary)
    except PdfFontsMissing as exc:
        return _fonts_missing(request, exc)
    report_record_access(user=request.user, report="compliance_summary", fmt="pdf", scope=summary.scope())
    response = HttpResponse(content, content_type="application/pdf")
    name = f"compliance-summary-{summary.period_start.isoformat()}-{summary.period_end.isoformat()}.pdf"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return _no_store(response)


# --- Evidence pack ------------------------------------------------------------------------------------
@auditor_required
def evidence_lookup(request: HttpRequest) -> HttpResponse:
    typed = request.GET.get("reference", "")
    if not typed:
        return _no_store(render(request, "reports/evidence_lookup.html", {}))
    try:
        reference = normalise_reference(typed)
    except ValueError as exc:
        return _no_store(
            render(request, "reports/evidence_lookup.html", {"error": str(exc), "typed": typed[:32]}, status=400)
        )
    return HttpResponseRedirect(reverse("reports:evidence", args=[reference]))


def _pack(request: HttpRequest, reference: str, fmt: str) -> tuple[dict[str, Any] | None, HttpResponse | None]:
    """Record the access, then build the pack: its chain head is then the event recording this very access."""
    try:
        reference = normalise_reference(reference)
        if not DataSubjectRequest.objects.filter(reference=reference).exists():
            raise EvidenceNotFound(f"No request has the reference {reference}.")
    except (ValueError, EvidenceNotFound) as exc:
        message = str(exc) if isinstance(exc, EvidenceNotFound) else "That is not a request reference."
        page = render(request, "reports/evidence_lookup.html", {"error": message, "typed": reference[:32]}, status=404)
        return None, _no_store(page)
    report_record_access(
        user=request.user, report="evidence_pack", fmt=fmt, scope={"reference": reference}, request_reference=reference
    )
    return build_evidence_pack(reference=reference, generated_by=request.user.get_username()), None


@auditor_required
def evidence_page(request: HttpRequest, reference: str) -> HttpResponse:
    pack, error = _pack(request, reference, "html")
    if pack is None:
        return error  # type: ignore[return-value]
    return _no_store(render(request, "reports/evidence.html", {"pack": pack, "task_events": _task_event_rows(pack)}))


def _task_event_rows(pack: dict[str, Any]) -> list[dict[str, Any]]:
    """The pack's task events as the page lists them, like the PDF: the task in a column of its own, so the
    details leave ``task_id`` out. Done here, not in the template: a JSON payload's key order is the database's
    (PostgreSQL's jsonb sorts keys), so the template could not tell which item comes last for its separators."""
    return [
        {
            "event": event,
            "task_id": event["payload"]["task_id"],
            "details": {key: value for key, value in event["payload"].items() if key != "task_id"},
        }
        for event in pack["task_events"]
    ]


@auditor_required
def evidence_pdf(request: HttpRequest, reference: str) -> HttpResponse:
    try:
        register_fonts()  # before the access is recorded: a download that cannot happen is not recorded
    except PdfFontsMissing as exc:
        return _fonts_missing(request, exc)
    pack, error = _pack(request, reference, "pdf")
    if pack is None:
        return error  # type: ignore[return-value]
    content = render_evidence_pdf(pack)
    response = HttpResponse(content, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="evidence-{pack["request"]["reference"]}.pdf"'
    return _no_store(response)


@auditor_required
def evidence_json_download(request: HttpRequest, reference: str) -> HttpResponse:
    pack, error = _pack(request, reference, "json")
    if pack is None:
        return error  # type: ignore[return-value]
    response = HttpResponse(evidence_json(pack), content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="evidence-{pack["request"]["reference"]}.json"'
    return _no_store(response)
