"""Labels people write ("API calls", "Mixpanel project") and the links to the reports and the evidence pack."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.unit.staff.admin_support import change_url, staff_client, verified_request  # noqa: F401

pytestmark = pytest.mark.django_db


def test_the_index_and_titles_use_the_written_names(staff_client, project):
    index = staff_client.get(reverse("admin:index")).content.decode()
    assert "API calls" in index and "Api calls" not in index and "Mixpanel projects" in index
    page = staff_client.get(change_url(project)).content.decode()
    assert "Mixpanel project" in page and "mixpanel project" not in page.split("<title>")[1].split("</title>")[0]


def test_the_admin_links_to_the_reports_and_each_request_to_its_evidence_pack(staff_client, verified_request):
    page = staff_client.get(change_url(verified_request)).content.decode()
    assert f'href="{reverse("reports:index")}"' in page
    assert f'href="{reverse("reports:evidence", args=[verified_request.reference])}"' in page


def test_credential_status_follows_real_api_calls(staff_client, project):
    from datetime import timedelta

    from django.utils import timezone

    from gdpr_requests.models import ApiCall

    changelist = reverse("admin:gdpr_requests_mixpanelproject_changelist")
    assert "dsr-credential-unknown" in staff_client.get(changelist).content.decode()
    ApiCall.objects.create(project=project, operation="create_deletion", http_status=200, outcome="ok")
    page = staff_client.get(changelist).content.decode()
    assert "dsr-credential-ok" in page and "last API call" in page and "dsr-credential-unknown" not in page
    ApiCall.objects.create(
        project=project,
        operation="status",
        http_status=401,
        outcome="credential",
        created_at=timezone.now() + timedelta(seconds=1),
    )
    assert "dsr-credential-failing" in staff_client.get(changelist).content.decode()


def test_the_request_page_counts_the_api_calls_of_each_task(staff_client, verified_request, project):
    from gdpr_requests.models import ApiCall, MixpanelTask

    task = MixpanelTask.objects.create(project=project, kind="deletion", compliance_type="GDPR", distinct_ids=["u"])
    task.requests.add(verified_request)
    for operation in ("create_deletion", "status", "status"):
        ApiCall.objects.create(project=project, task=task, operation=operation, http_status=200, outcome="ok")
    page = staff_client.get(change_url(verified_request)).content.decode()
    tasks = page[page.index('id="dsr-tasks"') : page.index("</table>", page.index('id="dsr-tasks"'))]
    assert "API calls" in tasks and "<td>3</td>" in tasks
