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
