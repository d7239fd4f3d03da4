"""The request queue and the request page.

Staff never edit a request's fields: every change is an action with its own small form page that calls one
service (which audits it). The change page is therefore a read-only view with action buttons, the request's
timeline, its Mixpanel tasks, its export and its internal notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, Case, Count, QuerySet, Value, When
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join

from gdpr_requests import crypto, pipeline
from gdpr_requests.audit.chain import Actor
from gdpr_requests.audit.timeline import DECISION, human_timeline
from gdpr_requests.models import DataSubjectRequest, SubjectExport
from gdpr_requests.requests import approval_rules, selectors, services, states
from gdpr_requests.requests.approvals import request_approval_record, request_approve_many
from gdpr_requests.staff import approve_page
from gdpr_requests.staff import forms as action_forms
from gdpr_requests.staff import services as staff_services
from gdpr_requests.staff.common import REFUSALS, StaffModelAdmin, can_work, render_form_page
from gdpr_requests.staff.filters import (
    DueSoonFilter,
    NeedsAttentionFilter,
    OpenFilter,
    OverdueFilter,
    ReceivedRangeFilter,
)

PRE_APPROVAL = frozenset({states.UNVERIFIED, states.VERIFIED, states.ON_HOLD})
TIMELINE_LIMIT = 200


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _some(references: list[str], limit: int = 20) -> str:
    shown = ", ".join(references[:limit])
    return shown if len(references) <= limit else f"{shown} and {len(references) - limit} more"


def due_phrase(dsr: DataSubjectRequest, today: date | None = None) -> tuple[str, str]:
    """("in 3 days", css class) for an open request; closed requests are no longer due."""
    if dsr.status not in states.OPEN_STATES:
        return "closed", "dsr-due-closed"
    days = dsr.days_until_due(today)
    if days < 0:
        return f"overdue by {_plural(-days, 'day')}", "dsr-due-overdue"
    if days == 0:
        return "due today", "dsr-due-overdue"
    if days <= 3:
        return f"in {_plural(days, 'day')}", "dsr-due-soon"
    if days <= 7:
        return f"in {days} days", "dsr-due-week"
    return f"in {days} days", "dsr-due-later"


def _withdrawal_blockers(dsr: DataSubjectRequest) -> list[str]:
    if dsr.status not in states.OPEN_STATES:
        return []
    reason = services.withdrawal_blocker(dsr)
    return [reason] if reason else []


def _retry_tasks(dsr: DataSubjectRequest, actor: Actor) -> None:
    pipeline.request_retry_tasks(request=dsr, actor=actor)


# --- Actions ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestAction:
    """One button on the request page: its form page asks for what ``run`` needs and calls one service."""

    slug: str
    label: str
    title: str
    shown: Callable[[DataSubjectRequest], bool]
    run: Callable[[DataSubjectRequest, dict[str, Any], Actor], str]
    form: Callable[[Any, DataSubjectRequest], forms.Form] = lambda data, dsr: action_forms.ConfirmForm(data)
    blockers: Callable[[DataSubjectRequest], list[str]] = lambda dsr: []
    explain: Callable[[DataSubjectRequest], str] = lambda dsr: ""
    danger: bool = False
    submit: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _reason_form(label: str, help_text: str = "", *, required: bool = True) -> Callable[..., forms.Form]:
    return lambda data, dsr: action_forms.ReasonForm(data, label=label, help_text=help_text, required=required)


def _approve(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    outcome = request_approval_record(request=dsr, actor=actor)
    if not outcome.approved:
        return (
            f"Recorded your approval of {dsr.reference} ({outcome.approvals} of {outcome.required}): "
            f"a different staff member must approve it too before it is carried out."
        )
    return f"Approved {dsr.reference}: its Mixpanel tasks will be planned and submitted."


def _reject(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    services.request_reject(request=dsr, reason=data["reason"], ground=data["ground"], actor=actor)
    return f"Rejected {dsr.reference}; the requester is told why."


def _hold(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    services.request_hold(request=dsr, reason=data["reason"], actor=actor)
    return f"Put {dsr.reference} on hold."


def _resume(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    services.request_resume(request=dsr, actor=actor, note=data.get("reason", ""))
    return f"Resumed {dsr.reference}: it is {dsr.get_status_display().lower()} again."


def _extend(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    services.request_extend(request=dsr, reason=data["reason"], actor=actor)
    return f"Extended {dsr.reference}: now due {date_format(dsr.due_at)}. The requester is told."


def _explain_extend(dsr: DataSubjectRequest) -> str:
    rule = states.DEADLINE_RULES[dsr.regulation]
    new_due = states.extended_due_date(dsr.regulation, timezone.localtime(dsr.received_at).date())
    return (
        f"{dsr.get_regulation_display()} allows one extension by {rule.extension_description}: the new due "
        f"date will be {date_format(new_due)}. The requester is emailed the new date and your reason."
    )


def _record_identity(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    services.request_record_identity(request=dsr, how=data["how"], actor=actor)
    return f"Recorded the identity check for {dsr.reference}: it is verified."


def _set_distinct_ids(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    services.request_set_distinct_ids(request=dsr, distinct_ids=data["distinct_ids"], actor=actor)
    return f"Saved {_plural(len(dsr.distinct_ids), 'distinct id')} for {dsr.reference}."


def _distinct_ids_form(data: Any, dsr: DataSubjectRequest) -> forms.Form:
    return action_forms.DistinctIdsForm(data, initial={"distinct_ids": "\n".join(dsr.distinct_ids)})


def _set_projects(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    projects = list(data["projects"])
    services.request_set_projects(request=dsr, projects=projects, actor=actor)
    return f"{dsr.reference} now applies to {_plural(len(projects), 'project')}."


def _projects_form(data: Any, dsr: DataSubjectRequest) -> forms.Form:
    return action_forms.ProjectsForm(data, initial={"projects": list(dsr.projects.all())})


def _retry(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    _retry_tasks(dsr, actor)
    return f"Retrying the failed Mixpanel tasks of {dsr.reference}."


def _cancel(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    services.request_cancel(request=dsr, actor=actor, reason=data.get("reason", ""))
    return f"Cancelled {dsr.reference}; the requester is told."


def _resend(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    staff_services.request_resend_verification(dsr=dsr, actor=actor)
    return f"Sent {dsr.reference}'s requester a new confirmation link."


def _assign(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    assignee = data["assignee"]
    services.request_assign(request=dsr, assignee=assignee, actor=actor)
    return f"Assigned {dsr.reference} to {assignee.get_username()}." if assignee else f"Unassigned {dsr.reference}."


def _assign_form(data: Any, dsr: DataSubjectRequest) -> forms.Form:
    return action_forms.AssignForm(data, initial={"assignee": dsr.assignee_id})


def _note(dsr: DataSubjectRequest, data: dict[str, Any], actor: Actor) -> str:
    services.request_add_note(request=dsr, note=data["note"], actor=actor)
    return f"Added a note to {dsr.reference}."


REQUEST_ACTIONS: dict[str, RequestAction] = {
    action.slug: action
    for action in [
        RequestAction(
            "approve",
            "Approve",
            "Approve request",
            lambda r: r.status in PRE_APPROVAL,
            _approve,
            form=lambda data, r: action_forms.ApproveConfirmForm(data),
            blockers=services.approval_blockers,
            explain=lambda r: "Approving starts processing: the request's Mixpanel tasks are planned and submitted.",
        ),
        RequestAction(
            "verify-identity",
            "Record identity check",
            "Record how identity was checked",
            lambda r: r.status == states.UNVERIFIED,
            _record_identity,
            form=lambda data, r: action_forms.IdentityForm(data),
        ),
        RequestAction(
            "distinct-ids",
            "Distinct ids",
            "Add or correct Mixpanel distinct ids",
            lambda r: r.status in PRE_APPROVAL,
            _set_distinct_ids,
            form=_distinct_ids_form,
        ),
        RequestAction(
            "projects",
            "Projects",
            "Choose the Mixpanel projects",
            lambda r: r.status in PRE_APPROVAL,
            _set_projects,
            form=_projects_form,
        ),
        RequestAction("assign", "Assign", "Assign to a staff member", lambda r: r.is_open, _assign, form=_assign_form),
        RequestAction(
            "note",
            "Add note",
            "Add an internal note",
            lambda r: True,
            _note,
            form=lambda data, r: action_forms.NoteForm(data),
        ),
        RequestAction(
            "extend",
            "Extend deadline",
            "Extend the deadline",
            lambda r: r.is_open and not r.is_extended,
            _extend,
            form=_reason_form("Reason for the extension", "Shown to the requester."),
            explain=_explain_extend,
        ),
        RequestAction(
            "hold",
            "Put on hold",
            "Put on hold",
            lambda r: r.status in states.TRANSITIONS["hold"].sources,
            _hold,
            form=_reason_form("Reason for the hold", "Internal."),
        ),
        RequestAction(
            "resume",
            "Resume",
            "Resume",
            lambda r: r.status == states.ON_HOLD,
            _resume,
            form=_reason_form("Note", "Optional. Kept with the request's internal notes.", required=False),
        ),
        RequestAction(
            "retry",
            "Retry failed tasks",
            "Retry failed Mixpanel tasks",
            lambda r: r.status == states.FAILED,
            _retry,
            explain=lambda r: "Creates new Mixpanel tasks for the parts that failed; the request is approved again.",
        ),
        RequestAction(
            "resend-verification",
            "Resend confirmation email",
            "Resend the confirmation email",
            lambda r: r.status == states.UNVERIFIED,
            _resend,
            explain=lambda r: "The requester gets a new confirmation link; links sent before stop working.",
        ),
        RequestAction(
            "reject",
            "Reject",
            "Reject request",
            lambda r: r.status in states.TRANSITIONS["reject"].sources,
            _reject,
            form=lambda data, r: action_forms.RejectForm(data),
            danger=True,
        ),
        RequestAction(
            "cancel",
            "Cancel request",
            "Cancel request",
            lambda r: r.is_open,
            _cancel,
            form=_reason_form("Closing note", "Optional.", required=False),
            blockers=_withdrawal_blockers,
            danger=True,
            explain=lambda r: (
                "Withdraws the request for good (for example when the requester asks to). The requester is told."
            ),
        ),
    ]
}


# --- The admin ----------------------------------------------------------------------------------------
class DataSubjectRequestAdmin(StaffModelAdmin):
    list_display = [
        "reference",
        "kind",
        "regulation",
        "status_badge",
        "received_on",
        "due",
        "assignee",
        "projects_display",
    ]
    list_display_links = ["reference"]
    list_filter = [
        OpenFilter,
        "status",
        "kind",
        "regulation",
        OverdueFilter,
        DueSoonFilter,
        NeedsAttentionFilter,
        "projects",
        "channel",
        ReceivedRangeFilter,
    ]
    list_select_related = ["assignee"]
    ordering = ["due_at", "id"]
    search_fields = ["reference"]
    search_help_text = "A reference (DSR-…), or the requester's exact email address."
    actions = ["approve_selected", "assign_selected", "reject_selected"]
    readonly_fields = [
        "status_badge",
        "due_summary",
        "projects_display",
        "attention_display",
        "distinct_ids_display",
        "email_hash_short",
    ]

    # --- permissions: reading is the model's view permission; every write is an action ------------------
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # No raw edits at all, superusers included: the change page is a view with action buttons.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Every request has audit events from the moment it exists, and those must keep pointing at it.
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and can_work(request)

    def has_work_permission(self, request: HttpRequest) -> bool:
        return can_work(request)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    # --- the list -----------------------------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[DataSubjectRequest]:
        # One query for the page, one for its projects, whatever the page size.
        return (
            super()
            .get_queryset(request)
            .prefetch_related("projects")
            .annotate(
                needs_attention=Case(
                    When(selectors.needs_attention_q(), then=Value(True)),
                    default=Value(False),
                    output_field=BooleanField(),
                )
            )
        )

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if "@" in term:
            # Exact match on the keyed hash: the clear-text column is never scanned (and may be purged).
            return queryset.filter(email_hash=crypto.email_hash(term)), False
        return super().get_search_results(request, queryset, term.upper())

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: DataSubjectRequest) -> str:
        flag = ""
        if getattr(obj, "needs_attention", False):
            flag = format_html(' <span class="dsr-flag" title="{}">{}</span>', "Needs attention", "needs attention")
        return format_html(
            '<span class="dsr-status dsr-status-{}">{}</span>{}', obj.status, obj.get_status_display(), flag
        )

    @admin.display(description="received", ordering="received_at")
    def received_on(self, obj: DataSubjectRequest) -> str:
        return date_format(timezone.localtime(obj.received_at).date())

    @admin.display(description="due", ordering="due_at")
    def due(self, obj: DataSubjectRequest) -> str:
        phrase, css = due_phrase(obj)
        return format_html(
            '<span class="dsr-due {}">{}</span><br><span class="dsr-due-date">{}</span>',
            css,
            phrase,
            date_format(obj.due_at),
        )

    @admin.display(description="projects")
    def projects_display(self, obj: DataSubjectRequest) -> str:
        return ", ".join(project.name for project in obj.projects.all()) or "—"

    # --- the request page ---------------------------------------------------------------------------
    @admin.display(description="due")
    def due_summary(self, obj: DataSubjectRequest) -> str:
        phrase, css = due_phrase(obj)
        return format_html('{} <span class="dsr-due {}">({})</span>', date_format(obj.due_at), css, phrase)

    @admin.display(description="needs attention")
    def attention_display(self, obj: DataSubjectRequest) -> str:
        reasons = selectors.attention_reasons(obj)
        return "; ".join(reasons) if reasons else "No"

    @admin.display(description="Mixpanel distinct ids")
    def distinct_ids_display(self, obj: DataSubjectRequest) -> str:
        if not obj.distinct_ids:
            return "None yet"
        return format_html_join("", '<code class="dsr-id">{}</code><br>', ((value,) for value in obj.distinct_ids))

    @admin.display(description="email hash")
    def email_hash_short(self, obj: DataSubjectRequest) -> str:
        return f"{obj.email_hash[:16]}…"

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[tuple[str, dict[str, Any]]]:
        # Auditors see what happened and when; the requester's contact details and ids are for staff only.
        staff = can_work(request)
        requester = (
            ["requester_name", "requester_email", "message", "email_hash_short"] if staff else ["email_hash_short"]
        )
        ids = ["distinct_ids_display"] if staff else []
        return [
            (
                "Request",
                {
                    "fields": [
                        "reference",
                        "status_badge",
                        "attention_display",
                        "kind",
                        "regulation",
                        "disclosure_type",
                        "channel",
                        "assignee",
                        "projects_display",
                    ]
                },
            ),
            (
                "Deadline",
                {
                    "fields": [
                        "received_at",
                        "due_summary",
                        "original_due_at",
                        "extended_at",
                        "extended_by",
                        "extension_reason",
                    ]
                },
            ),
            ("Requester", {"fields": requester}),
            ("Identity and Mixpanel ids", {"fields": ["verified_at", "verified_by", "identity_verification", *ids]}),
            (
                "Outcome",
                {
                    "fields": [
                        "status_changed_at",
                        "approved_at",
                        "approved_by",
                        "hold_reason",
                        "rejection_reason",
                        "closed_at",
                        "closing_note",
                    ]
                },
            ),
        ]

    def _workspace_context(self, request: HttpRequest, obj: DataSubjectRequest) -> dict[str, Any]:
        buttons = []
        if can_work(request):
            for action in REQUEST_ACTIONS.values():
                if not action.shown(obj):
                    continue
                blockers = action.blockers(obj)
                buttons.append(
                    {
                        "label": action.label,
                        "url": reverse("admin:gdpr_requests_datasubjectrequest_action", args=[obj.pk, action.slug]),
                        "enabled": not blockers,
                        "why_not": f"Cannot {action.label.lower()}: {'; '.join(blockers)}." if blockers else "",
                        "danger": action.danger,
                    }
                )
        timeline = selectors.request_timeline(obj)
        show_api_calls = request.GET.get("api_calls") == "1"
        latest = list(timeline[:TIMELINE_LIMIT])
        entries = human_timeline(latest, include_machine_steps=show_api_calls)[::-1]  # newest first
        return {
            "decisions": [entry for entry in entries if entry.kind == DECISION],
            "steps": [entry for entry in entries if entry.kind != DECISION],
            "show_api_calls": show_api_calls,
            "history_url": reverse("admin:gdpr_requests_datasubjectrequest_history", args=[obj.pk]),
            "approval_state": approval_rules.approval_state(obj) if obj.status in PRE_APPROVAL else None,
            "action_buttons": buttons,
            "timeline": latest,
            "timeline_total": timeline.count(),
            # "Attempts" counts retries after failures; the calls actually made are what staff ask about.
            "tasks": list(selectors.request_tasks(obj).annotate(call_count=Count("api_calls"))),
            "export": SubjectExport.objects.filter(request=obj).first(),
            "notes": list(obj.notes.select_related("author"))
            if request.user.has_perm("gdpr_requests.view_requestnote")
            else None,
        }

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if obj is not None and self.has_view_permission(request, obj):
            context.update(self._workspace_context(request, obj))
        return super().change_view(request, object_id, form_url, context)

    def history_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None):
        """ "History" opens the request's timeline in sentences (the admin's own log stays empty: nobody edits a
        request's fields, every change is an audited action)."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_view_permission(request, obj):
            raise PermissionDenied
        show_api_calls = request.GET.get("api_calls") == "1"
        events = list(selectors.request_timeline(obj))
        return render_form_page(
            self,
            request,
            title=f"Timeline: {obj.reference}",
            obj=obj,
            template="admin/gdpr_requests/datasubjectrequest/timeline.html",
            context={
                "entries": human_timeline(events, include_machine_steps=show_api_calls),
                "show_api_calls": show_api_calls,
                "event_count": len(events),
            },
        )

    # --- intake: staff enter a request received by letter, phone or email ------------------------------
    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = action_forms.IntakeForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                created = services.request_create(actor=Actor.staff(request.user), **form.service_arguments())
            except REFUSALS as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request, f"Entered {created.reference} ({created.get_status_display().lower()}).", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:gdpr_requests_datasubjectrequest_change", args=[created.pk]))
        return render_form_page(
            self,
            request,
            title="Enter a request received by staff",
            form=form,
            context={"submit_label": "Enter request", "add": True},
        )

    # --- one page per action ------------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<path:object_id>/act/<slug:action>/",
                self.admin_site.admin_view(self.action_view),
                name="gdpr_requests_datasubjectrequest_action",
            ),
        ]
        return own + super().get_urls()

    def action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        if not can_work(request) or not self.has_view_permission(request):
            raise PermissionDenied
        spec = REQUEST_ACTIONS.get(action)
        if spec is None:
            raise Http404("No such action.")
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404("No such request.")
        posted = request.method == "POST"
        form = spec.form(request.POST if posted else None, obj)
        if posted and form.is_valid():
            try:
                message = spec.run(obj, form.cleaned_data, Actor.staff(request.user))
            except REFUSALS as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, message, messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:gdpr_requests_datasubjectrequest_change", args=[obj.pk]))
            obj.refresh_from_db()
        if spec.slug == "approve":
            blockers = spec.blockers(obj)
            blocked = f"Cannot approve: {'; '.join(blockers)}." if blockers else ""
            return self._approve_page(request, [obj.pk], form, obj=obj, blocked_reason=blocked)
        blockers = spec.blockers(obj)
        return render_form_page(
            self,
            request,
            title=f"{spec.title}: {obj.reference}",
            form=form,
            obj=obj,
            context={
                "explain": spec.explain(obj),
                "blockers": blockers,
                "blocked_reason": f"Cannot {spec.label.lower()}: {'; '.join(blockers)}." if blockers else "",
                "submit_label": spec.label,
                "danger": spec.danger,
                "status_label": obj.get_status_display(),
            },
        )

    # --- bulk actions on the list --------------------------------------------------------------------
    def _each(
        self, request: HttpRequest, queryset: QuerySet, verb: str, run: Callable[[DataSubjectRequest, Actor], Any]
    ) -> None:
        actor = Actor.staff(request.user)
        done: list[str] = []
        refused: list[str] = []
        for dsr in queryset.order_by("due_at", "id"):
            try:
                run(dsr, actor)
            except REFUSALS as exc:
                refused.append(str(exc))
            else:
                done.append(dsr.reference)
        if done:
            self.message_user(request, f"{verb} {_plural(len(done), 'request')}: {', '.join(done)}.", messages.SUCCESS)
        for message in refused:
            self.message_user(request, message, messages.ERROR)

    def _bulk_page(
        self, request: HttpRequest, queryset: QuerySet, form: forms.Form, *, action: str, title: str, submit: str
    ) -> HttpResponse:
        return render_form_page(
            self,
            request,
            title=title,
            form=form,
            template="admin/gdpr_requests/bulk_action.html",
            context={
                "queryset": queryset.order_by("due_at", "id"),
                "action_name": action,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "select_across": request.POST.get("select_across", "0"),
                "submit_label": submit,
            },
        )

    def _approve_page(
        self,
        request: HttpRequest,
        pks: list[int],
        form: forms.Form,
        *,
        obj: Any = None,
        bulk: bool = False,
        blocked_reason: str = "",
    ) -> HttpResponse:
        rows = approve_page.approval_rows(pks)
        approvable = sum(1 for row in rows if not row.blocked)
        title = f"Approve request: {obj.reference}" if obj is not None and not bulk else "Approve requests"
        return render_form_page(
            self,
            request,
            title=title,
            form=form,
            obj=obj,
            template="admin/gdpr_requests/approve_confirm.html",
            context={
                "rows": rows,
                "bulk": bulk,
                "blocked_count": len(rows) - approvable,
                "approvable_count": approvable,
                "blocked_reason": blocked_reason,
                "submit_label": f"Approve {_plural(approvable, 'request')}" if bulk else "Approve",
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                # "Select all N" posts the page's ids with select_across=1 and the filters in the query string:
                # re-posting the same keeps the confirmation's body small whatever N is.
                "select_across": request.POST.get("select_across", "0") if bulk else "0",
                "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME) if bulk else [],
                "preserved_query": request.GET.urlencode() if bulk else "",
            },
        )

    @admin.action(description="Approve selected requests…", permissions=["work"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Like Django's delete_selected: a confirmation page first, then one set-based approval."""
        applying = "apply" in request.POST
        form = action_forms.ApproveConfirmForm(request.POST if applying else None)
        pks = list(queryset.values_list("pk", flat=True))
        if not (applying and form.is_valid()):
            return self._approve_page(request, pks, form, bulk=True)
        outcome = request_approve_many(request_pks=pks, actor=Actor.staff(request.user))
        if outcome.approved:
            self.message_user(
                request,
                f"Approved {_plural(len(outcome.approved), 'request')}: {_some(outcome.approved)}.",
                messages.SUCCESS,
            )
        if outcome.awaiting_second:
            self.message_user(
                request,
                f"Recorded your approval of {_some(outcome.awaiting_second)}: "
                "a different staff member must approve them too.",
                messages.WARNING,
            )
        for message in outcome.refused[:20]:
            self.message_user(request, message, messages.ERROR)
        if len(outcome.refused) > 20:
            self.message_user(request, f"… and {len(outcome.refused) - 20} more not approved.", messages.ERROR)
        return None

    @admin.action(description="Assign selected requests to…", permissions=["work"])
    def assign_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        applying = "apply" in request.POST
        form = action_forms.AssignForm(request.POST if applying else None)
        if applying and form.is_valid():
            assignee = form.cleaned_data["assignee"]
            self._each(
                request,
                queryset,
                f"Assigned to {assignee.get_username()}" if assignee else "Unassigned",
                lambda dsr, actor: services.request_assign(request=dsr, assignee=assignee, actor=actor),
            )
            return None
        return self._bulk_page(
            request, queryset, form, action="assign_selected", title="Assign requests", submit="Assign"
        )

    @admin.action(description="Reject selected requests (one reason)…", permissions=["work"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        applying = "apply" in request.POST
        form = action_forms.RejectForm(request.POST if applying else None)
        if applying and form.is_valid():
            reason, ground = form.cleaned_data["reason"], form.cleaned_data["ground"]
            self._each(
                request,
                queryset,
                "Rejected",
                lambda dsr, actor: services.request_reject(request=dsr, reason=reason, ground=ground, actor=actor),
            )
            return None
        return self._bulk_page(
            request, queryset, form, action="reject_selected", title="Reject requests", submit="Reject"
        )
