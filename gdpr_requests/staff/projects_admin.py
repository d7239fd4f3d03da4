"""Mixpanel projects: only superusers add or change them, through the project services; secrets are write-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from gdpr_requests.audit.chain import Actor
from gdpr_requests.mixpanel.client import CREDENTIAL as CREDENTIAL_OUTCOME
from gdpr_requests.mixpanel.client import OK as OK_OUTCOME
from gdpr_requests.models import ApiCall, CredentialStatus, MixpanelProject
from gdpr_requests.staff.common import REFUSALS, StaffModelAdmin, can_work, render_form_page

EXPIRY_WARNING_DAYS = 30
# Fields the form edits directly; the two secrets have their own write-only fields.
PLAIN_FIELDS = [
    "name",
    "mixpanel_project_id",
    "project_token",
    "residency",
    "base_url_override",
    "deletion_batch_size",
    "token_owner_email",
    "token_expires_on",
    "is_active",
]


def secret_state(value: str, changed_at: Any) -> str:
    """What the admin may say about a stored secret: whether it is set and when it last changed, never its value."""
    if not value:
        return "not set"
    if changed_at is None:
        return "set"
    return f"set, last changed on {date_format(timezone.localtime(changed_at).date())}"


class ProjectForm(forms.ModelForm):
    """The stored secrets never reach the page: their fields render empty and only change when filled."""

    oauth_token_new = forms.CharField(
        label="New GDPR OAuth token",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    api_secret_new = forms.CharField(
        label="New API secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    clear_api_secret = forms.BooleanField(label="Remove the stored API secret", required=False)
    # Declared so that the scheme-less default of Django 5 (http) is not guessed for a credential's host.
    base_url_override = forms.URLField(
        label="Base URL override",
        required=False,
        assume_scheme="https",
        help_text="A sandbox, test server or proxy; leave blank for Mixpanel's host for the residency.",
    )

    class Meta:
        model = MixpanelProject
        fields = PLAIN_FIELDS
        # A date input only takes ISO dates; the locale's format would leave it blank.
        widgets = {"token_expires_on": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        project = self.instance
        adding = project._state.adding
        token_state = "not set" if adding else secret_state(project.oauth_token, project.oauth_token_changed_at)
        secret = "not set" if adding else secret_state(project.api_secret, project.api_secret_changed_at)
        keep = "" if adding else " Leave blank to keep it."
        self.fields["oauth_token_new"].help_text = f"Currently {token_state}.{keep}"
        self.fields[
            "api_secret_new"
        ].help_text = f"Currently {secret}.{keep} Opens password-protected retrieval archives."

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.instance._state.adding and not data.get("oauth_token_new"):
            self.add_error("oauth_token_new", "A new project needs its GDPR OAuth token.")
        if data.get("clear_api_secret") and data.get("api_secret_new"):
            self.add_error("clear_api_secret", "Either give a new API secret or remove it, not both.")
        return data

    def service_values(self) -> dict[str, Any]:
        """Field values for projects.project_create/project_update: the secrets only when given."""
        data = self.cleaned_data
        values = {name: data[name] for name in PLAIN_FIELDS if name in data}
        if data.get("oauth_token_new"):
            values["oauth_token"] = data["oauth_token_new"]
        if data.get("api_secret_new"):
            values["api_secret"] = data["api_secret_new"]
        elif data.get("clear_api_secret"):
            values["api_secret"] = ""
        return values


class MixpanelProjectAdmin(StaffModelAdmin):
    form = ProjectForm
    list_display = [
        "name",
        "mixpanel_project_id",
        "residency",
        "is_active",
        "credential_badge",
        "expiry",
    ]
    list_filter = ["is_active", "residency", "credential_status"]
    search_fields = ["name", "mixpanel_project_id"]
    readonly_fields = [
        "oauth_token_state",
        "api_secret_state",
        "expiry",
        "credential_badge",
        "credential_checked_at",
        "credential_error",
        "created_at",
        "updated_at",
    ]

    # --- permissions: superusers manage projects; staff and auditors look; nobody deletes ---------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Tasks, calls and the audit trail refer to projects: deactivate one instead.
        return False

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[tuple[str, dict[str, Any]]]:
        editing = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
        secrets = ["oauth_token_new", "api_secret_new", "clear_api_secret"] if editing else []
        return [
            ("Project", {"fields": ["name", "mixpanel_project_id", "project_token", "residency", "is_active"]}),
            (
                "Credentials",
                {
                    "fields": [
                        "oauth_token_state",
                        "api_secret_state",
                        *secrets,
                        "token_owner_email",
                        "token_expires_on",
                        "expiry",
                    ]
                },
            ),
            (
                "Status",
                {
                    "fields": [
                        "credential_badge",
                        "credential_checked_at",
                        "credential_error",
                        "created_at",
                        "updated_at",
                    ]
                },
            ),
            ("Advanced", {"fields": ["base_url_override", "deletion_batch_size"], "classes": ["collapse"]}),
        ]

    @admin.display(description="GDPR OAuth token")
    def oauth_token_state(self, obj: MixpanelProject) -> str:
        if obj is None or obj.pk is None:
            return "not set"
        return secret_state(obj.oauth_token, obj.oauth_token_changed_at)

    @admin.display(description="API secret")
    def api_secret_state(self, obj: MixpanelProject) -> str:
        if obj is None or obj.pk is None:
            return "not set"
        return secret_state(obj.api_secret, obj.api_secret_changed_at)

    @admin.display(description="token expires", ordering="token_expires_on")
    def expiry(self, obj: MixpanelProject) -> str:
        if obj is None or obj.token_expires_on is None:
            return "—"
        days = obj.days_until_token_expiry
        if days < 0:
            phrase, css = f"expired {-days} day{'s' if days != -1 else ''} ago", "dsr-expiry-expired"
        elif days == 0:
            phrase, css = "expires today", "dsr-expiry-expired"
        elif days <= EXPIRY_WARNING_DAYS:
            phrase, css = f"in {days} day{'s' if days != 1 else ''}", "dsr-expiry-soon"
        else:
            phrase, css = f"in {days} days", "dsr-expiry-ok"
        return format_html('{} <span class="dsr-expiry {}">({})</span>', date_format(obj.token_expires_on), css, phrase)

    def get_queryset(self, request: HttpRequest) -> QuerySet[MixpanelProject]:
        # The latest real API call that says something about the credentials (answered, or refused them): one
        # subquery for the page, so the status is not "Not checked" after hundreds of successful calls.
        latest = ApiCall.objects.filter(project=OuterRef("pk"), outcome__in=[OK_OUTCOME, CREDENTIAL_OUTCOME]).order_by(
            "-created_at", "-pk"
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_call_outcome=Subquery(latest.values("outcome")[:1]),
                last_call_at=Subquery(latest.values("created_at")[:1]),
            )
        )

    @admin.display(description="credential", ordering="credential_status")
    def credential_badge(self, obj: MixpanelProject) -> str:
        status, label = obj.credential_status, obj.get_credential_status_display()
        when = ""
        last_at = getattr(obj, "last_call_at", None)
        if last_at is not None and (obj.credential_checked_at is None or last_at > obj.credential_checked_at):
            # A real call is newer than the last check: it tells the truth about the credentials.
            status = CredentialStatus.OK if obj.last_call_outcome == OK_OUTCOME else CredentialStatus.FAILING
            label = CredentialStatus(status).label
            when = f" (last API call {date_format(timezone.localtime(last_at), 'j M Y, H:i')})"
        elif obj.credential_checked_at is not None:
            when = f" (checked {date_format(timezone.localtime(obj.credential_checked_at), 'j M Y, H:i')})"
        css = {CredentialStatus.OK: "ok", CredentialStatus.FAILING: "failing"}.get(status, "unknown")
        return format_html('<span class="dsr-credential dsr-credential-{}">{}</span>{}', css, label, when)

    # --- saving goes through the project services (validation + audit event) ---------------------------
    def save_model(self, request: HttpRequest, obj: MixpanelProject, form: ProjectForm, change: bool) -> None:
        from gdpr_requests.projects import services as projects

        actor = Actor.staff(request.user)
        values = form.service_values()
        if change:
            saved = projects.project_update(project=MixpanelProject.objects.get(pk=obj.pk), actor=actor, **values)
        else:
            is_active = values.pop("is_active", True)
            saved = projects.project_create(actor=actor, **values)
            if not is_active:
                saved = projects.project_update(project=saved, actor=actor, is_active=False)
        # The admin goes on to log and redirect with ``obj``: make it the saved row.
        for model_field in MixpanelProject._meta.concrete_fields:
            setattr(obj, model_field.attname, getattr(saved, model_field.attname))
        obj._state.adding = False

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = dict(extra_context or {})
        if object_id is not None and can_work(request):
            context["check_credentials_url"] = reverse(
                "admin:gdpr_requests_mixpanelproject_check_credentials", args=[object_id]
            )
        try:
            return super().changeform_view(request, object_id, form_url, context)
        except REFUSALS as exc:
            # The form catches nearly everything; what only the service knows comes back as a message.
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    # --- "Check credentials" ----------------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<path:object_id>/check-credentials/",
                self.admin_site.admin_view(self.check_credentials_view),
                name="gdpr_requests_mixpanelproject_check_credentials",
            )
        ]
        return own + super().get_urls()

    def check_credentials_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not can_work(request) or not self.has_view_permission(request):
            raise PermissionDenied
        project = self.get_object(request, unquote(object_id))
        if project is None:
            raise Http404("No such project.")
        if request.method == "POST":
            from gdpr_requests import pipeline

            try:
                result = pipeline.project_check_credentials(project=project, actor=Actor.staff(request.user))
            except REFUSALS as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                level = messages.SUCCESS if result.ok else messages.ERROR
                self.message_user(request, f"{project.name}: {result.message}", level)
            return HttpResponseRedirect(reverse("admin:gdpr_requests_mixpanelproject_change", args=[project.pk]))
        return render_form_page(
            self,
            request,
            title=f"Check credentials: {project.name}",
            obj=project,
            context={
                "explain": "Makes one harmless authenticated call to Mixpanel (a status lookup of a task that "
                "cannot exist). 401 or 403 means the credential fails; any other answer means it works. "
                "The result is recorded in the audit trail.",
                "submit_label": "Check credentials",
            },
        )
