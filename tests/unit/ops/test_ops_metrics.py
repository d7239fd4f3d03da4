"""/metrics: who may read it, and that its numbers match a data set built here."""

from __future__ import annotations

import sys
import types
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from gdpr_requests.models import ApiCall, AuditEvent, MixpanelProject, MixpanelTask, TaskState
from gdpr_requests.requests import services, states

pytestmark = pytest.mark.django_db


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


# --- access -------------------------------------------------------------------------------------------
def test_metrics_refuse_a_request_without_the_token(client, settings):
    settings.METRICS_TOKEN = "scrape-secret-123"
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"dsr_requests" not in response.content


def test_metrics_refuse_a_wrong_token_even_from_loopback(client, settings):
    settings.METRICS_TOKEN = "scrape-secret-123"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-12").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic scrape-secret-123").status_code == 401


def test_metrics_answer_the_right_bearer_token_from_anywhere(client, settings):
    settings.METRICS_TOKEN = "scrape-secret-123"
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-123", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 200
    assert b"dsr_requests" in response.content


def test_without_a_token_only_direct_loopback_clients_may_read(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401
    # A reverse proxy on the same host connects from 127.0.0.1 on behalf of anyone: not good enough.
    proxied = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert proxied.status_code == 401


# --- numbers ------------------------------------------------------------------------------------------
@pytest.fixture
def data_set(make_request, staff_actor, project):
    """3 unverified (2 overdue), 1 verified, 1 approved, 1 rejected; tasks and API calls in two projects."""
    long_ago = timezone.now() - timedelta(days=70)
    make_request(email="a@example.org")
    make_request(email="b@example.org", received_at=long_ago)
    make_request(email="c@example.org", received_at=long_ago)
    verified = make_request(email="d@example.org")
    services.request_confirm_email(request=verified)
    approved = make_request(email="e@example.org")
    services.request_confirm_email(request=approved)
    services.request_approve(request=approved, actor=staff_actor)
    rejected = make_request(email="f@example.org", received_at=long_ago)
    services.request_reject(request=rejected, reason="not our customer", actor=staff_actor)

    other = MixpanelProject.objects.create(
        name="Web shop",
        mixpanel_project_id="777",
        project_token="tok777",
        oauth_token="x",
        token_expires_on=timezone.localdate() + timedelta(days=300),
    )
    now = timezone.now()
    MixpanelTask.objects.create(
        project=project,
        kind="deletion",
        compliance_type="GDPR",
        distinct_ids=["x"],
        state=TaskState.PENDING_SUBMIT,
        next_attempt_at=now - timedelta(seconds=90),
    )
    MixpanelTask.objects.create(
        project=project,
        kind="deletion",
        compliance_type="GDPR",
        distinct_ids=["y"],
        state=TaskState.SUBMITTED,
        next_attempt_at=now - timedelta(seconds=30),
    )
    MixpanelTask.objects.create(
        project=other,
        kind="retrieval",
        compliance_type="GDPR",
        distinct_ids=["z"],
        state=TaskState.SUBMITTED,
        next_attempt_at=now + timedelta(hours=1),
    )
    # A finished task long past its attempt time is not "due": it must not count as the oldest.
    MixpanelTask.objects.create(
        project=other,
        kind="retrieval",
        compliance_type="GDPR",
        distinct_ids=["w"],
        state=TaskState.SUCCEEDED,
        next_attempt_at=now - timedelta(days=3),
    )
    for proj, outcome, n in [(project, "ok", 4), (project, "rate_limited", 2), (other, "ok", 1)]:
        for _ in range(n):
            ApiCall.objects.create(project=proj, operation="create_deletion", http_status=201, outcome=outcome)
    return {"other": other}


def test_metrics_count_requests_by_status_and_overdue(client, data_set):
    values = scrape(client)
    assert values[("dsr_requests", (("status", "unverified"),))] == 3
    assert values[("dsr_requests", (("status", "verified"),))] == 1
    assert values[("dsr_requests", (("status", "approved"),))] == 1
    assert values[("dsr_requests", (("status", "rejected"),))] == 1
    assert values[("dsr_requests", (("status", "completed"),))] == 0
    # 70-day-old unverified requests are past their one-month GDPR deadline; the rejected one is closed.
    assert values[("dsr_requests_overdue", ())] == 2


def test_metrics_count_tasks_by_state_and_the_oldest_due_age(client, data_set):
    values = scrape(client)
    assert values[("dsr_mixpanel_tasks", (("state", "pending_submit"),))] == 1
    assert values[("dsr_mixpanel_tasks", (("state", "submitted"),))] == 2
    assert values[("dsr_mixpanel_tasks", (("state", "succeeded"),))] == 1
    assert values[("dsr_mixpanel_tasks", (("state", "failed"),))] == 0
    age = values[("dsr_mixpanel_oldest_due_task_age_seconds", ())]
    assert 90 <= age < 120


def test_metrics_count_api_calls_by_project_and_outcome(client, data_set):
    values = scrape(client)
    assert values[("dsr_mixpanel_api_calls_total", (("outcome", "ok"), ("project", "Main app")))] == 4
    assert values[("dsr_mixpanel_api_calls_total", (("outcome", "rate_limited"), ("project", "Main app")))] == 2
    assert values[("dsr_mixpanel_api_calls_total", (("outcome", "ok"), ("project", "Web shop")))] == 1


def test_metrics_audit_chain_length_is_the_number_of_events(client, data_set):
    values = scrape(client)
    assert AuditEvent.objects.count() > 6
    assert values[("dsr_audit_chain_length", ())] == AuditEvent.objects.count()


def test_metrics_report_the_rate_limiter_wait_count(client, monkeypatch):
    try:
        from gdpr_requests.mixpanel import ratelimit
    except ImportError:  # the pipeline's limiter is not there yet: stand in for it at the same import path
        ratelimit = types.ModuleType("gdpr_requests.mixpanel.ratelimit")
        monkeypatch.setitem(sys.modules, "gdpr_requests.mixpanel.ratelimit", ratelimit)
        import gdpr_requests.mixpanel as package

        monkeypatch.setattr(package, "ratelimit", ratelimit, raising=False)
    monkeypatch.setattr(ratelimit, "wait_count", lambda: 17, raising=False)
    values = scrape(client)
    assert values[("dsr_mixpanel_rate_limit_waits_total", ())] == 17


EXPECTED_FAMILIES = {
    "dsr_requests",
    "dsr_requests_overdue",
    "dsr_mixpanel_tasks",
    "dsr_mixpanel_oldest_due_task_age_seconds",
    "dsr_subject_email_oldest_unsent_age_seconds",
    "dsr_mixpanel_api_calls",
    "dsr_audit_chain_length",
    "dsr_audit_head_sequence",
}


def test_metrics_hold_no_personal_data_or_references(client, make_request, project):
    dsr = make_request(email="canary-metrics@example.org", name="Canary Person", distinct_ids=["canary-id-42"])
    ApiCall.objects.create(project=project, operation="create_deletion", http_status=201, outcome="ok")
    response = client.get("/metrics")
    # An empty or refused answer would hold no personal data either: first make sure the numbers are there.
    assert response.status_code == 200, response.content
    text = response.content.decode()
    families = {family.name for family in text_string_to_metric_families(text)}
    assert families >= EXPECTED_FAMILIES, EXPECTED_FAMILIES - families
    assert samples(text)[("dsr_requests", (("status", dsr.status),))] == 1
    for secret in ("canary-metrics", "Canary Person", "canary-id-42", dsr.reference):
        assert secret not in text


def test_metrics_export_the_age_of_the_oldest_unsent_subject_email(client, make_request):
    import time_machine

    from gdpr_requests.models import SubjectNotification
    from gdpr_requests.notifications.outbox import send_subject_notification

    assert scrape(client)[("dsr_subject_email_oldest_unsent_age_seconds", ())] == 0
    with time_machine.travel(timezone.now() - timedelta(minutes=5)):
        old = make_request(email="old@example.org")
    make_request(email="new@example.org")
    assert SubjectNotification.objects.filter(sent_at__isnull=True).count() == 2
    age = scrape(client)[("dsr_subject_email_oldest_unsent_age_seconds", ())]
    assert 300 <= age < 330
    event = SubjectNotification.objects.get(request=old).event
    assert send_subject_notification(request_id=old.pk, event=event)
    assert scrape(client)[("dsr_subject_email_oldest_unsent_age_seconds", ())] < 30


def test_metrics_export_the_audit_head_checkpoint_which_deleting_events_does_not_move_back(client, make_request):
    from django.db import connection, transaction

    from gdpr_requests.audit import triggers as audit_triggers

    make_request()
    make_request(email="other@example.org")
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    values = scrape(client)
    assert values[("dsr_audit_head_sequence", ())] == values[("dsr_audit_chain_length", ())] == head
    with transaction.atomic():  # as an attacker with database rights would
        audit_triggers.drop(connection)
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {audit_triggers.TABLE} WHERE sequence > 1")
        audit_triggers.install(connection)
    values = scrape(client)
    assert (values[("dsr_audit_chain_length", ())], values[("dsr_audit_head_sequence", ())]) == (1, head)


def test_a_scrape_costs_a_fixed_number_of_queries(client, data_set, make_request, django_assert_max_num_queries):
    with django_assert_max_num_queries(8):
        client.get("/metrics")
    for i in range(10):
        make_request(email=f"more{i}@example.org")
    with django_assert_max_num_queries(8):
        response = client.get("/metrics")
    assert samples(response.content.decode())[("dsr_requests", (("status", states.UNVERIFIED),))] == 13
