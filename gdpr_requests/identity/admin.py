"""The staff side of identity lookups in the admin.

- On the request page (two read-only inlines added to the request admin by ``register()``): each lookup with
  what it found in words ("no profile found for this email in PROJECT", "lookup failed: …"), and the candidates
  with the evidence Mixpanel gave (matched property, last seen, profile name);
- "Mixpanel profile candidates": the review list, where "Accept" and "Reject" act on the selected candidates
  through the services (audited). Only privacy staff see candidates: their ids are personal data;
- "Profile lookup access": per project, the Query API's service account (its secret write-only), the profile
  properties that hold an email and the auto-accept policy; superusers change them through
  project_set_query_access, and "Check profile query" asks one harmless query.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from gdpr_requests.audit.chain import Actor
from gdpr_requests.identity.services import (
    candidate_accept,
    candidate_reject,
    credential_warning,
    lookup_summary,
    project_check_query,
    project_set_query_access,
)
from gdpr_requests.models import (
    CandidateState,
    DataSubjectRequest,
    IdentityCandidate,
    IdentityLookup,
    ProfileLookupAccess,
)
from gdpr_requests.requests.services import ServiceError

WORK = "gdpr_requests.work_request"


def _staff(request: HttpRequest) -> bool:
    return request.user.is_active and request.user.has_perm(WORK)


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class IdentityLookupInline(_ReadOnlyInline):
    model = IdentityLookup
    verbose_name = "Mixpanel lookup of the email"
    verbose_name_plural = "Mixpanel lookups of the email"
    fields = ["project", "status", "outcome", "queued_at", "finished_at", "attempts", "review"]
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff(request) and request.user.has_perm("gdpr_requests.view_identitylookup")

    def get_queryset(self, request: HttpRequest) -> QuerySet[IdentityLookup]:
        return super().get_queryset(request).select_related("project")

    @admin.display(description="outcome")
    def outcome(self, obj: IdentityLookup) -> str:
        return lookup_summary(obj)

    @admin.display(description="")
    def review(self, obj: IdentityLookup) -> str:
        if not obj.candidate_count:
            return ""
        # Through the list's search on the reference: the change list accepts no undeclared lookups in its query
        # string (staff.common.DeclaredFiltersOnly).
        url = reverse("admin:gdpr_requests_identitycandidate_changelist")
        return format_html('<a href="{}?{}">Review candidates</a>', url, urlencode({"q": obj.request.reference}))


class IdentityCandidateInline(_ReadOnlyInline):
    model = IdentityCandidate
    verbose_name = "Mixpanel profile found for the email"
    verbose_name_plural = "Mixpanel profiles found for the email (accept or reject them under Review candidates)"
    fields = ["project", "distinct_id", "matched_property", "last_seen", "profile_name", "state", "decided_by"]
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff(request) and request.user.has_perm("gdpr_requests.view_identitycandidate")

    def get_queryset(self, request: HttpRequest) -> QuerySet[IdentityCandidate]:
        return super().get_queryset(request).select_related("project", "decided_by")


class IdentityCandidateAdmin(admin.ModelAdmin):
    list_display = ["request_reference", "project", "distinct_id", "matched_property", "last_seen", "state", "decided"]
    list_filter = ["state", "project"]
    list_select_related = ["request", "project", "decided_by"]
    search_fields = ["=request__reference"]
    search_help_text = "A request reference (DSR-…)."
    actions = ["accept_selected", "reject_selected"]
    readonly_fields = [
        "request",
        "project",
        "distinct_id",
        "matched_property",
        "last_seen",
        "profile_name",
        "state",
        "found_at",
        "decided_by",
        "decided_at",
    ]
    fields = readonly_fields

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _staff(request) and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # decisions are the actions below, each through a service

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_work_permission(self, request: HttpRequest) -> bool:
        return _staff(request)

    @admin.display(description="request", ordering="request__reference")
    def request_reference(self, obj: IdentityCandidate) -> str:
        url = reverse("admin:gdpr_requests_datasubjectrequest_change", args=[obj.request_id])
        return format_html('<a href="{}">{}</a>', url, obj.request.reference)

    @admin.display(description="decided")
    def decided(self, obj: IdentityCandidate) -> str:
        if obj.state == CandidateState.PENDING:
            return "—"
        who = obj.decided_by.get_username() if obj.decided_by else "system"
        return f"{who}, {obj.decided_at:%Y-%m-%d %H:%M}" if obj.decided_at else who

    def _decide(self, request: HttpRequest, queryset: QuerySet[IdentityCandidate], *, accept: bool) -> None:
        by_request: dict[int, list[str]] = defaultdict(list)
        for request_id, distinct_id in queryset.values_list("request_id", "distinct_id"):
            by_request[request_id].append(distinct_id)
        actor = Actor.staff(request.user)
        done, failed = 0, []
        for dsr in DataSubjectRequest.objects.filter(pk__in=by_request).order_by("reference"):
            try:
                if accept:
                    candidate_accept(request=dsr, distinct_ids=by_request[dsr.pk], actor=actor)
                else:
                    candidate_reject(request=dsr, distinct_ids=by_request[dsr.pk], actor=actor)
            except ServiceError as exc:
                failed.append(str(exc))
                continue
            done += len(by_request[dsr.pk])
        verb = "Accepted" if accept else "Rejected"
        if done:
            note = " Their ids joined the requests' distinct ids." if accept else ""
            self.message_user(request, f"{verb} {done} candidate(s).{note}", messages.SUCCESS)
        for message in failed:
            self.message_user(request, message, messages.ERROR)

    @admin.action(description="Accept selected candidates (their ids join the request)", permissions=["work"])
    def accept_selected(self, request: HttpRequest, queryset: QuerySet[IdentityCandidate]) -> None:
        self._decide(request, queryset, accept=True)

    @admin.action(description="Reject selected candidates", permissions=["work"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[IdentityCandidate]) -> None:
        self._decide(request, queryset, accept=False)


class QueryAccessForm(forms.ModelForm):
    """The stored secret never reaches the page: its field renders empty and only changes when filled."""

    secret_new = forms.CharField(
        label="New service account secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    properties_text = forms.CharField(
        label="Email properties",
        help_text="Profile properties that hold an email, comma-separated (e.g. $email, email).",
    )

    class Meta:
        model = ProfileLookupAccess
        fields = ["query_username", "auto_accept_single_match"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["properties_text"].initial = ", ".join(self.instance.identity_properties or ["$email"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        username = (cleaned.get("query_username") or "").strip()
        has_secret = bool(cleaned.get("secret_new")) or bool(self.instance.query_secret)
        if username and not has_secret:
            self.add_error("secret_new", "A service account needs its secret.")
        return cleaned

    def service_values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "username": (data.get("query_username") or "").strip(),
            "secret": data.get("secret_new") or None,
            "identity_properties": [p.strip() for p in data["properties_text"].split(",")],
            "auto_accept_single_match": bool(data.get("auto_accept_single_match")),
        }


class ProfileLookupAccessAdmin(admin.ModelAdmin):
    form = QueryAccessForm
    list_display = ["name", "method", "properties", "auto_accept_single_match", "lookups"]
    readonly_fields = ["name", "secret_state", "method", "lookups"]
    actions = ["check_selected"]
    fieldsets = [
        (None, {"fields": ["name", "method", "lookups"]}),
        ("Service account", {"fields": ["query_username", "secret_state", "secret_new"]}),
        ("Lookups", {"fields": ["properties_text", "auto_accept_single_match"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # projects are added on their own page

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[tuple[str | None, dict[str, Any]]]:
        return self.fieldsets

    @admin.display(description="service account secret")
    def secret_state(self, obj: ProfileLookupAccess) -> str:
        return "set" if obj.query_secret else "not set"

    @admin.display(description="how lookups authenticate")
    def method(self, obj: ProfileLookupAccess) -> str:
        if obj.query_username and obj.query_secret:
            return f"service account {obj.query_username}"
        return credential_warning(obj)

    @admin.display(description="email properties")
    def properties(self, obj: ProfileLookupAccess) -> str:
        return ", ".join(obj.identity_properties or ["$email"])

    @admin.display(description="lookups")
    def lookups(self, obj: ProfileLookupAccess) -> str:
        return f"PAUSED: {obj.lookup_paused_reason}" if obj.lookup_paused_at else "running"

    def save_model(self, request: HttpRequest, obj: Any, form: QueryAccessForm, change: bool) -> None:
        # Through the service (validation, the pause lifted by a new credential, the audit event), never a raw save.
        # A refusal leaves the change view's transaction (change_view): nothing saved, no "changed successfully".
        project_set_query_access(project=obj, actor=Actor.staff(request.user), **form.service_values())

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().change_view(request, object_id, form_url, extra_context)
        except ServiceError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    @admin.action(description="Check profile query (one harmless query per project)")
    def check_selected(self, request: HttpRequest, queryset: QuerySet[ProfileLookupAccess]) -> None:
        if not self.has_change_permission(request):
            return
        for project in queryset.order_by("name"):
            ok, message = project_check_query(project=project, actor=Actor.staff(request.user))
            level = messages.SUCCESS if ok else messages.WARNING if ok is None else messages.ERROR
            self.message_user(request, f"{project.name}: {message}", level)


def register(site: admin.AdminSite | None = None) -> None:
    """Register the candidates' and the lookup access admins, and add the two inlines to the request admin
    (called from apps.py)."""
    site = site or admin.site
    for model, model_admin in (
        (IdentityCandidate, IdentityCandidateAdmin),
        (ProfileLookupAccess, ProfileLookupAccessAdmin),
    ):
        if not site.is_registered(model):
            site.register(model, model_admin)
    request_admin = site._registry.get(DataSubjectRequest)
    if request_admin is not None:
        extra = [i for i in (IdentityLookupInline, IdentityCandidateInline) if i not in request_admin.inlines]
        request_admin.inlines = [*request_admin.inlines, *extra]
