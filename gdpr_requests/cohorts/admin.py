"""The cohort intakes in the staff workspace: superusers add, rotate and disable them through the services; staff
and auditors see each intake's last syncs (counts only), its requests and its authentication failures.

The password is shown once, on the page that follows its creation or rotation, and never again.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join

from gdpr_requests.audit.chain import Actor
from gdpr_requests.cohorts import services
from gdpr_requests.models import CohortIntake, CohortSync, DataSubjectRequest
from gdpr_requests.staff.common import REFUSALS, ServiceAddAdmin, admin_url, render_form_page

CREDENTIALS_TEMPLATE = "admin/gdpr_requests/cohort_credentials.html"
RECENT_SYNCS = 20
RECENT_REQUESTS = 50


def _when(value: Any) -> str:
    return date_format(timezone.localtime(value), "DATETIME_FORMAT") if value else "—"


class IntakeAddForm(forms.ModelForm):
    class Meta:
        model = CohortIntake
        fields = ["name", "project", "kind", "regulation", "identity", "auto_approve"]


class CohortIntakeAdmin(ServiceAddAdmin):
    form = IntakeAddForm
    list_display = [
        "name",
        "project",
        "kind",
        "regulation",
        "identity",
        "auto_approve",
        "is_active",
        "last_sync_at",
        "auth_failure_count",
    ]
    list_filter = ["is_active", "kind", "identity"]
    list_select_related = ["project"]
    search_fields = ["name"]
    actions = None

    # --- permissions: superusers configure; whoever may see requests may see where they came from ----------
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        return bool(
            user.is_active
            and user.is_staff
            and (user.is_superuser or user.has_perm("gdpr_requests.view_datasubjectrequest"))
        )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # changes go through the pages below (rotate, disable), each one service

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # requests refer to their intake: disable it instead

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return IntakeAddForm.Meta.fields
        return [
            "name",
            "project",
            "kind",
            "regulation",
            "identity",
            "auto_approve",
            *(["auto_approval"] if services.auto_approval_blocked(obj) else []),
            "is_active",
            "webhook",
            "username",
            "password_state",
            "auth_failures",
            "last_sync_at",
            *(["manage"] if self.has_add_permission(request) else []),
            "recent_syncs",
            "recent_requests",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return self.get_fields(request, obj)

    @admin.display(description="auto-approval")
    def auto_approval(self, obj: CohortIntake) -> str:
        return format_html('<strong class="dsr-warning">{}</strong>', services.auto_approval_blocked(obj))

    @admin.display(description="webhook URL")
    def webhook(self, obj: CohortIntake) -> str:
        return services.webhook_url(obj)

    @admin.display(description="password")
    def password_state(self, obj: CohortIntake) -> str:
        text = f"set on {_when(obj.password_changed_at)} (shown only when it was made)"
        if obj.previous_valid_until and obj.previous_valid_until > timezone.now():
            text += f"; the previous one works until {_when(obj.previous_valid_until)}"
        return text

    @admin.display(description="failed authentications")
    def auth_failures(self, obj: CohortIntake) -> str:
        if not obj.auth_failure_count:
            return "none"
        return f"{obj.auth_failure_count}, last on {_when(obj.last_auth_failure_at)} (what was sent is not kept)"

    @admin.display(description="manage")
    def manage(self, obj: CohortIntake) -> str:
        if not obj.is_active:
            return "Disabled: Mixpanel's syncs get 404 and pause."
        return format_html(
            '<a class="button" href="{}">Rotate password</a> <a class="button" href="{}">Disable</a>',
            reverse("admin:gdpr_requests_cohortintake_rotate", args=[obj.pk]),
            reverse("admin:gdpr_requests_cohortintake_disable", args=[obj.pk]),
        )

    @admin.display(description="last syncs")
    def recent_syncs(self, obj: CohortIntake) -> str:
        syncs = list(CohortSync.objects.filter(intake=obj).order_by("-received_at", "-id")[:RECENT_SYNCS])
        if not syncs:
            return "No message received yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    _when(s.received_at),
                    s.action,
                    f"{s.page_count}/{s.total_pages or '?'}",
                    s.members_received,
                    s.requests_created,
                    s.duplicates_skipped,
                    s.refused,
                    s.redeliveries,
                )
                for s in syncs
            ),
        )
        return format_html(
            '<table class="dsr-cohort-syncs"><thead><tr><th>time</th><th>action</th><th>page</th>'
            "<th>members received</th><th>requests created</th><th>duplicates skipped</th>"
            "<th>refused (no email)</th><th>delivered again</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="requests")
    def recent_requests(self, obj: CohortIntake) -> str:
        requests = list(
            DataSubjectRequest.objects.filter(cohort_member__intake=obj)
            .order_by("-received_at", "-id")
            .only("pk", "reference", "status", "received_at")[:RECENT_REQUESTS]
        )
        if not requests:
            return "None yet."
        total = DataSubjectRequest.objects.filter(cohort_member__intake=obj).count()
        links = format_html_join(
            ", ", '<a href="{}">{}</a> ({})', ((admin_url(r), r.reference, r.status) for r in requests)
        )
        more = f" … and {total - len(requests)} more" if total > len(requests) else ""
        return format_html("{} in all: {}{}", total, links, more)

    # --- adding goes through the service, and the password is shown on the next page only --------------------
    def save_model(self, request: HttpRequest, obj: CohortIntake, form: IntakeAddForm, change: bool) -> None:
        data = form.cleaned_data
        saved, password = services.cohort_intake_create(
            name=data["name"],
            project=data["project"],
            kind=data["kind"],
            regulation=data["regulation"],
            identity=data["identity"],
            auto_approve=data["auto_approve"],
            actor=Actor.staff(request.user),
        )
        for model_field in CohortIntake._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(saved, model_field.attname))
        obj._state.adding = False
        obj.shown_password = password

    def response_add(self, request: HttpRequest, obj: CohortIntake, post_url_continue: Any = None) -> HttpResponse:
        blocked = services.auto_approval_blocked(obj)
        if blocked:
            self.message_user(request, blocked, messages.WARNING)
        return self._credentials_page(request, obj, obj.shown_password, title="Cohort intake created")

    def _credentials_page(self, request: HttpRequest, obj: CohortIntake, password: str, *, title: str):
        response = render_form_page(
            self,
            request,
            title=title,
            obj=obj,
            template=CREDENTIALS_TEMPLATE,
            context={"webhook_url": services.webhook_url(obj), "username": obj.username, "password": password},
        )
        # The password must not stay in a cache (admin pages are never cached; this says so for this one too).
        response["Cache-Control"] = "no-store"
        return response

    # --- rotate and disable -----------------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        own = [
            path("<path:object_id>/rotate/", self.admin_site.admin_view(self.rotate_view), name=self._name("rotate")),
            path(
                "<path:object_id>/disable/", self.admin_site.admin_view(self.disable_view), name=self._name("disable")
            ),
        ]
        return own + super().get_urls()

    def _name(self, view: str) -> str:
        return f"gdpr_requests_cohortintake_{view}"

    def _intake_for(self, request: HttpRequest, object_id: str) -> CohortIntake:
        if not self.has_add_permission(request):
            raise PermissionDenied
        intake = self.get_object(request, unquote(object_id))
        if intake is None:
            raise Http404
        return intake

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponse | TemplateResponse:
        intake = self._intake_for(request, object_id)
        if request.method == "POST":
            password = services.cohort_intake_rotate_password(intake=intake, actor=Actor.staff(request.user))
            return self._credentials_page(request, intake, password, title="New password")
        grace = services.password_grace().total_seconds() / 3600
        return render_form_page(
            self,
            request,
            title="Rotate password",
            form=forms.Form(),
            obj=intake,
            context={
                "explain": f"A new password is made and shown once. The current one keeps working for {grace:g} "
                "hours, time to type the new one into Mixpanel's webhook destination.",
                "submit_label": "Rotate password",
            },
        )

    def disable_view(self, request: HttpRequest, object_id: str) -> HttpResponse | TemplateResponse:
        intake = self._intake_for(request, object_id)
        if request.method == "POST":
            try:
                services.cohort_intake_disable(intake=intake, actor=Actor.staff(request.user))
                self.message_user(request, f"Disabled {intake.name}.", messages.SUCCESS)
            except REFUSALS as exc:
                self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(admin_url(intake))
        return render_form_page(
            self,
            request,
            title="Disable",
            form=forms.Form(),
            obj=intake,
            context={
                "explain": "Messages are refused from now on: Mixpanel gets 404, pauses the sync and emails whoever "
                "set it up. The requests already taken stay as they are.",
                "submit_label": "Disable",
                "danger": True,
            },
        )
