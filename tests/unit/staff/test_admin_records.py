"""Read-only records in the admin: the audit trail (filters, "Verify chain"), Mixpanel tasks and API calls."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from gdpr_requests.models import ApiCall, AuditEvent, MixpanelProject, MixpanelTask, TaskState
from gdpr_requests.requests import services
from tests.unit.staff.admin_support import auditor_client, change_url, messages_of, staff_client, verified_request  # noqa: F401

pytestmark = pytest.mark.django_db

VERIFY = "/admin/gdpr_requests/auditevent/verify/"


def rows(response, pattern: str) -> list[str]:
    return re.findall(pattern, response.content.decode())


def test_verify_chain_reports_an_intact_trail(auditor_client, verified_request, staff_actor):
    services.request_approve(request=verified_request, actor=staff_actor)
    count = AuditEvent.objects.count()
    page = auditor_client.get(VERIFY)
    assert page.status_code == 200 and "dsr-verify" not in page.content.decode()  # a GET runs nothing
    response = auditor_client.post(VERIFY)
    head = AuditEvent.objects.order_by("-sequence").first().hash
    assert f"OK: {count} events, head {head}" in messages_of(response)
    assert "The chain is intact." in response.content.decode()
    assert AuditEvent.objects.count() == count  # verifying writes nothing


def test_verify_chain_names_the_first_broken_event(auditor_client, verified_request, settings):
    settings.AUDIT_CHAIN_KEY = "a-different-key-than-the-one-that-wrote-the-trail"
    response = auditor_client.post(VERIFY)
    assert any(m.startswith("BROKEN at event 1:") for m in messages_of(response))
    assert "The chain is broken." in response.content.decode()


def test_the_verify_button_is_on_the_audit_trail(auditor_client, verified_request):
    page = auditor_client.get(reverse("admin:gdpr_requests_auditevent_changelist")).content.decode()
    assert f'href="{VERIFY}"' in page
    assert "addlink" not in page  # no "Add audit event"


def test_audit_trail_filters_by_action_and_actor(staff_client, verified_request, staff_actor):
    services.request_add_note(request=verified_request, note="x", actor=staff_actor)
    changelist = reverse("admin:gdpr_requests_auditevent_changelist")
    by_actor = staff_client.get(changelist, {"actor_type__exact": "staff"})
    assert rows(by_actor, r'<td class="field-action">([\w.]+)</td>') == ["request.note_added"]
    by_action = staff_client.get(changelist, {"action": "request.created"})
    assert rows(by_action, r'<td class="field-action">([\w.]+)</td>') == ["request.created"]
    by_date = staff_client.get(changelist, {"occurred_at__gte": "2000-01-01"})
    assert by_date.status_code == 200 and len(rows(by_date, r'class="field-action"')) == 2


def test_an_audit_event_page_is_read_only_and_shows_the_payload(staff_client, verified_request):
    event = AuditEvent.objects.get(action="request.created")
    page = staff_client.get(change_url(event)).content.decode()
    assert "&quot;distinct_id_count&quot;: 1" in page and event.hash in page
    assert 'name="_save"' not in page and "deletelink" not in page


@pytest.fixture
def task_and_calls(verified_request, project):
    other = MixpanelProject.objects.create(
        name="Other",
        mixpanel_project_id="2",
        project_token="t2",
        oauth_token="o",
        token_expires_on=project.token_expires_on,
    )
    task = MixpanelTask.objects.create(
        project=project,
        kind="deletion",
        compliance_type="GDPR",
        distinct_ids=["secret-id-1", "secret-id-2"],
        tracking_id="trk-1",
        state=TaskState.FAILED,
        last_error="HTTP 400 from create",
    )
    task.requests.add(verified_request)
    MixpanelTask.objects.create(
        project=other, kind="retrieval", compliance_type="GDPR", distinct_ids=["z"], state=TaskState.SUBMITTED
    )
    ApiCall.objects.create(
        project=project, task=task, operation="create_deletion", http_status=400, outcome="permanent"
    )
    ApiCall.objects.create(project=other, operation="retrieval_status", http_status=200, outcome="ok")
    return task, other


def test_tasks_filter_by_state_and_project_and_hide_the_ids(staff_client, task_and_calls, verified_request):
    task, other = task_and_calls
    changelist = reverse("admin:gdpr_requests_mixpaneltask_changelist")
    failed = staff_client.get(changelist, {"state__exact": "failed"})
    assert rows(failed, r'<td class="field-tracking_id">([^<]*)</td>') == ["trk-1"]
    by_project = staff_client.get(changelist, {"project__id__exact": other.pk})
    assert rows(by_project, r'<td class="field-state">([^<]*)</td>') == ["Submitted, polling"]
    page = staff_client.get(change_url(task)).content.decode()
    assert verified_request.reference in page and "HTTP 400 from create" in page
    assert "secret-id-1" not in page


def test_tasks_show_the_api_calls_made_and_the_retries_in_a_row(staff_client, task_and_calls, project):
    """A task that succeeded on its first call shows 1 API call and 0 retries (not "attempts 0")."""
    task, _other = task_and_calls
    ApiCall.objects.create(project=project, task=task, operation="deletion_status", http_status=200, outcome="ok")
    MixpanelTask.objects.filter(pk=task.pk).update(attempts=0, state=TaskState.SUCCEEDED)
    changelist = staff_client.get(reverse("admin:gdpr_requests_mixpaneltask_changelist"), {"state__exact": "succeeded"})
    assert rows(changelist, r'<td class="field-api_call_count">([^<]*)</td>') == ["2"]
    assert rows(changelist, r'<td class="field-retries">([^<]*)</td>') == ["0"]
    page = staff_client.get(change_url(task)).content.decode()
    assert "API calls" in page and "Retries in a row" in page


def test_api_calls_filter_by_outcome_and_project(staff_client, task_and_calls, project):
    changelist = reverse("admin:gdpr_requests_apicall_changelist")
    permanent = staff_client.get(changelist, {"outcome": "permanent"})
    assert rows(permanent, r'<td class="field-operation">([^<]*)</td>') == ["create_deletion"]
    by_project = staff_client.get(changelist, {"project__id__exact": project.pk})
    assert rows(by_project, r'<td class="field-operation">([^<]*)</td>') == ["create_deletion"]
