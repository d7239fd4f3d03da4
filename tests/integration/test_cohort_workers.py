"""A cohort sync through real workers: Mixpanel posts a page, the auto-approving intake's task approves the
requests in a `celery worker` subprocess, and the pipeline carries the deletions to the fake Mixpanel and to
``completed`` (the harness: tests/integration/conftest.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from django.test import Client

from gdpr_requests.audit.chain import Actor
from gdpr_requests.cohorts import services
from gdpr_requests.models import AuditEvent, DataSubjectRequest
from gdpr_requests.requests import states
from tests.integration.fake_mixpanel import CREATE_DELETION
from tests.unit.cohorts.support import auth_header, member, payload

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def test_a_cohort_sourced_deletion_goes_through_the_pipeline_to_completed(pipeline):
    project = pipeline.make_project(name="Product", batch_size=50)
    intake, password = services.cohort_intake_create(
        name="Deleted in app",
        project=project,
        kind="deletion",
        regulation="gdpr",
        auto_approve=True,
        actor=Actor.system("integration tests"),
    )
    pipeline.start_workers(1)
    body = payload([member(n) for n in range(3)], project_id=project.mixpanel_project_id, session="integration-session")
    response = Client().post(
        services.WEBHOOK_PATH.format(public_id=intake.public_id),
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=auth_header(intake.username, password),
    )
    assert response.json() == {"action": "add_members", "status": "success"}
    made = list(DataSubjectRequest.objects.filter(channel="cohort"))
    assert len(made) == 3

    done = pipeline.wait_for_requests(made, timeout=120)
    assert Counter(r.status for r in done) == {states.COMPLETED: 3}
    approvals = AuditEvent.objects.filter(action="request.approve", request_reference__in=[r.reference for r in made])
    assert set(approvals.values_list("actor_label", flat=True)) == {"cohort:Deleted in app"}
    sent = sorted(i for c in pipeline.fake.calls_for(operation=CREATE_DELETION) for i in c.distinct_ids)
    assert sent == ["distinct-0", "distinct-1", "distinct-2"]
