"""Read-only records: the audit trail (with chain verification), Mixpanel tasks, API calls and subject exports.

Nobody adds, changes or deletes these through the admin, superusers included: services write them, and the
database itself refuses UPDATE and DELETE on the audit table.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from gdpr_requests.audit import chain as audit
from gdpr_requests.models import AuditEvent, MixpanelTask, SubjectExport
from gdpr_requests.staff.common import ReadOnlyAdmin, render_form_page


def _request_link(reference: str) -> str:
    """A link to the request list searched by reference: no query per row."""
    if not reference:
        return "—"
    url = reverse("admin:gdpr_requests_datasubjectrequest_changelist") + "?" + urlencode({"q": reference})
    return format_html('<a href="{}">{}</a>', url, reference)


class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["sequence", "occurred_at", "actor_type", "actor_label", "action", "request_link"]
    list_filter = ["action", "actor_type", "occurred_at"]
    search_fields = ["=request_reference", "action"]
    search_help_text = "A request reference (exact) or part of an action name."
    ordering = ["-sequence"]
    show_full_result_count = False
    fields = [
        "sequence",
        "occurred_at",
        "actor_type",
        "actor_id",
        "actor_label",
        "action",
        "request_link",
        "payload_pretty",
        "prev_hash",
        "hash",
    ]
    readonly_fields = ["request_link", "payload_pretty"]

    @admin.display(description="request", ordering="request_reference")
    def request_link(self, obj: AuditEvent) -> str:
        return _request_link(obj.request_reference)

    @admin.display(description="payload")
    def payload_pretty(self, obj: AuditEvent) -> str:
        return format_html('<pre class="dsr-payload">{}</pre>', json.dumps(obj.payload, indent=2, sort_keys=True))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {"verify_chain_url": reverse("admin:gdpr_requests_auditevent_verify"), **(extra_context or {})}
        return super().changelist_view(request, context)

    def get_urls(self) -> list[Any]:
        own = [path("verify/", self.admin_site.admin_view(self.verify_view), name="gdpr_requests_auditevent_verify")]
        return own + super().get_urls()

    def verify_view(self, request: HttpRequest) -> HttpResponse:
        """Recompute the whole chain (a read: it writes nothing) and show the summary."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        result = None
        if request.method == "POST":
            result = audit.verify_database()
            self.message_user(request, result.summary(), messages.SUCCESS if result.ok else messages.ERROR)
        return render_form_page(
            self,
            request,
            title="Verify the audit chain",
            template="admin/gdpr_requests/verify_chain.html",
            context={"result": result},
        )


class MixpanelTaskAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "project",
        "state",
        "remote_status",
        "tracking_id",
        "api_call_count",
        "retries",
        "next_attempt_at",
        "short_error",
        "request_count",
    ]
    list_filter = ["state", "kind", "remote_status", "project"]
    list_select_related = ["project"]
    search_fields = ["=tracking_id"]
    fields = [
        "project",
        "kind",
        "compliance_type",
        "disclosure_type",
        "state",
        "remote_status",
        "tracking_id",
        "requesting_user",
        "api_call_count",
        "retries",
        "polls",
        "next_attempt_at",
        "last_error",
        "id_count",
        "request_references",
        "parent",
        "created_at",
        "submitted_at",
        "finished_at",
        "updated_at",
    ]
    readonly_fields = ["id_count", "request_references", "api_call_count", "retries"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[MixpanelTask]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                linked_requests=Count("requests", distinct=True), api_calls_made=Count("api_calls", distinct=True)
            )
        )

    @admin.display(description="API calls", ordering="api_calls_made")
    def api_call_count(self, obj: MixpanelTask) -> int:
        """Every HTTP call made for the task (successful ones included): what "attempts" used to suggest."""
        made = getattr(obj, "api_calls_made", None)
        return made if made is not None else obj.api_calls.count()

    @admin.display(description="retries in a row", ordering="attempts")
    def retries(self, obj: MixpanelTask) -> int:
        """Unsuccessful attempts of the current phase (0 once a call succeeds; MIXPANEL_MAX_ATTEMPTS gives up)."""
        return obj.attempts

    @admin.display(description="requests", ordering="linked_requests")
    def request_count(self, obj: MixpanelTask) -> int:
        return obj.linked_requests

    @admin.display(description="last error")
    def short_error(self, obj: MixpanelTask) -> str:
        return obj.last_error[:80] + ("…" if len(obj.last_error) > 80 else "")

    @admin.display(description="distinct ids")
    def id_count(self, obj: MixpanelTask) -> int:
        # The ids themselves are the subjects' identifiers: the request page shows them to staff.
        return len(obj.distinct_ids)

    @admin.display(description="serves requests")
    def request_references(self, obj: MixpanelTask) -> str:
        references = obj.requests.order_by("reference").values_list("reference", flat=True)
        return format_html_join(", ", "{}", ((_request_link(ref),) for ref in references)) or "—"


class ApiCallAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "project", "operation", "http_status", "outcome", "duration_ms", "task"]
    list_filter = ["outcome", "operation", "project", "created_at"]
    list_select_related = ["project", "task"]
    search_fields = ["=task__tracking_id"]
    show_full_result_count = False


class SubjectExportAdmin(ReadOnlyAdmin):
    list_display = ["request", "size", "short_sha256", "created_at", "expires_at", "deleted_at", "download_count"]
    list_select_related = ["request"]
    list_filter = ["created_at", "expires_at"]
    search_fields = ["=request__reference"]
    fields = [
        "request",
        "task",
        "original_name",
        "content_type",
        "size",
        "sha256",
        "created_at",
        "expires_at",
        "deleted_at",
        "download_count",
        "last_downloaded_at",
    ]

    @admin.display(description="sha256")
    def short_sha256(self, obj: SubjectExport) -> str:
        return f"{obj.sha256[:12]}…"
