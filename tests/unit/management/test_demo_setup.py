"""manage.py demo_setup: the demo data of `make run`, idempotent, following the server's address."""

from __future__ import annotations

import pytest

from gdpr_requests.management.commands.demo_setup import DEMO_PROJECT
from gdpr_requests.models import AuditEvent, DataSubjectRequest, MixpanelProject
from tests.unit.management.cli_support import run

pytestmark = pytest.mark.django_db


def test_a_second_run_on_another_port_points_the_demo_project_at_the_new_sandbox(settings):
    settings.MIXPANEL_SANDBOX_ENABLED = True
    settings.SITE_URL = "http://127.0.0.1:8000"
    run("demo_setup")
    project = MixpanelProject.objects.get(name=DEMO_PROJECT)
    assert project.base_url_override == "http://127.0.0.1:8000/sandbox/mixpanel/api/app"
    demo_requests = DataSubjectRequest.objects.count()
    assert demo_requests >= 3

    settings.SITE_URL = "http://127.0.0.1:8123"
    out, _err = run("demo_setup")

    project.refresh_from_db()
    assert project.base_url_override == "http://127.0.0.1:8123/sandbox/mixpanel/api/app"
    assert "http://127.0.0.1:8123/sandbox/mixpanel/api/app" in out
    assert AuditEvent.objects.filter(action="project.updated").count() == 1
    assert MixpanelProject.objects.count() == 1
    assert DataSubjectRequest.objects.count() == demo_requests  # nothing made twice


def test_a_second_run_on_the_same_port_changes_nothing(settings):
    settings.MIXPANEL_SANDBOX_ENABLED = True
    settings.SITE_URL = "http://127.0.0.1:8000"
    run("demo_setup")
    run("demo_setup")
    assert not AuditEvent.objects.filter(action="project.updated").exists()
