"""The staff side of identity lookups in the admin.

- On the request page (two read-only inlines added to the request admin by ``register()``): each lookup with
  what it found in words ("no profile found for this email in PROJECT", "lookup failed: …"), and the candidates
  with the evidence Mixpanel gave (matched property, last seen, profile name);
- "Mixpanel profile candidates": the review list, where "Accept" and "Reject" act on the selected candidates
  through the services (audited). Only privacy staff see candidates: their ids are personal data.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from gdpr_requests.audit.chain import Actor
from gdpr_requests.identity.services import candidate_accept, candidate_reject, lookup_summary
from gdpr_requests.models import CandidateState, DataSubjectRequest, IdentityCandidate, IdentityLookup
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
        url = reverse("admin:gdpr_requests_identitycandidate_changelist")
        return format_html('<a href="{}?request__id__exact={}">Review candidates</a>', url, obj.request_id)


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


def register(site: admin.AdminSite | None = None) -> None:
    """Register the candidates' admin and add the two inlines to the request admin (called from apps.py)."""
    site = site or admin.site
    if not site.is_registered(IdentityCandidate):
        site.register(IdentityCandidate, IdentityCandidateAdmin)
    request_admin = site._registry.get(DataSubjectRequest)
    if request_admin is not None:
        extra = [i for i in (IdentityLookupInline, IdentityCandidateInline) if i not in request_admin.inlines]
        request_admin.inlines = [*request_admin.inlines, *extra]
