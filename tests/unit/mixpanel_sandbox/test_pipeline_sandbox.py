"""The pipeline against the built-in sandbox on a live test server (real HTTP on loopback, real clock):
what ``make run`` shows a new user, in one process. The multi-worker tier is in tests/integration."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import io
import time
import zipfile
from datetime import date

import pytest
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.audit.chain import verify_database
from gdpr_requests.models import ApiCall, MixpanelProject, MixpanelTask, SubjectExport, TaskState
from gdpr_requests.pipeline.task_states import DISPATCHABLE
from gdpr_requests.requests import exports, readable_export, states
from tests.unit.pipeline.pipeline_support import approve, eager_celery  # noqa: F401  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sandboxed(live_server, settings):
    settings.REDIS_URL = ""
    settings.MIXPANEL_SANDBOX_ENABLED = True
    settings.MIXPANEL_SANDBOX_STEP_SECONDS = 0.3
    settings.MIXPANEL_SANDBOX_RATE_LIMIT = True  # the sandbox answers 429 to a second call within a second
    for knob in ("429", "5XX", "SLOW", "FAILURE"):
        setattr(settings, f"MIXPANEL_SANDBOX_FAULT_{knob}", 0.0)
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 1.1  # a little over Mixpanel's 1 call/s: arrival times jitter
    settings.GDPR_POLL_INITIAL_SECONDS = 0.5
    settings.GDPR_POLL_MAX_SECONDS = 1.0
    settings.GDPR_DELETION_COALESCE_SECONDS = 0.0
    settings.MIXPANEL_HTTP_TIMEOUT_SECONDS = 10
    MixpanelProject.objects.all().delete()
    return MixpanelProject.objects.create(
        name="Sandbox demo",
        mixpanel_project_id="424242",
        project_token="demo-token",
        oauth_token="demo-oauth",
        api_secret="demo-secret",
        token_expires_on=date(2027, 1, 1),
        base_url_override=live_server.url + "/sandbox/mixpanel/api/app",
    )


def test_deletions_and_an_access_request_complete_against_the_sandbox(
    sandboxed, make_request, staff_actor, eager_celery
):
    deletions = [approve(make_request, staff_actor, distinct_ids=[f"demo-{n}"]) for n in range(3)]
    access = approve(make_request, staff_actor, kind="access", distinct_ids=["demo-0"])
    everyone = [*deletions, access]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pipeline.plan_approved()
        pipeline.dispatch_due()
        for task_id in MixpanelTask.objects.filter(
            state__in=DISPATCHABLE, next_attempt_at__lte=timezone.now()
        ).values_list("pk", flat=True):
            pipeline.task_step(task_id=task_id)
        for dsr in everyone:
            dsr.refresh_from_db()
        if all(dsr.status in states.FINAL_STATES for dsr in everyone):
            break
        time.sleep(0.1)
    assert [dsr.status for dsr in everyone] == [states.COMPLETED] * 4
    assert MixpanelTask.objects.filter(kind="deletion").count() == 1  # the three were coalesced
    assert set(MixpanelTask.objects.values_list("state", flat=True)) == {TaskState.SUCCEEDED}
    assert not ApiCall.objects.exclude(outcome="ok").exists()  # no 429: our limiter kept to the sandbox's pace
    export = SubjectExport.objects.get(request=access)
    with exports.export_open(export) as handle:
        names = zipfile.ZipFile(io.BytesIO(handle.read())).namelist()
    # Mixpanel's files under the project's folder, beside the readable overview (index.html, README.txt, pages).
    mixpanel_files = [name for name in names if not readable_export.is_generated(name)]
    assert mixpanel_files and all(name.startswith("sandbox-demo/") for name in mixpanel_files)
    assert "index.html" in names and "README.txt" in names
    assert verify_database().ok
