"""The sandbox's profile query answers the Query API's contract, with its seeded profiles and its own limits;
the real client and the resolution run against it unchanged."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

from gdpr_requests.models import IdentityCandidate, IdentityLookup, LookupStatus
from mixpanel_sandbox import engage
from tests.unit.identity.identity_support import drive, make_project, make_verified

URL = "/sandbox/mixpanel/api/query/engage"


@pytest.fixture
def sandbox_settings(identity_settings):
    identity_settings.MIXPANEL_SANDBOX_ENABLED = True
    identity_settings.MIXPANEL_SANDBOX_FAULT_429 = 0.0
    identity_settings.MIXPANEL_SANDBOX_FAULT_5XX = 0.0
    identity_settings.MIXPANEL_SANDBOX_FAULT_SLOW = 0.0
    identity_settings.MIXPANEL_SANDBOX_QUERY_WINDOW_SECONDS = 60.0
    return identity_settings


def _auth(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()


def _post(where: str, *, auth: str, project_id: str = "101", **form: str):
    return Client().post(f"{URL}?project_id={project_id}", {"where": where, **form}, HTTP_AUTHORIZATION=auth)


@pytest.mark.django_db
def test_seeded_email_on_two_profiles_and_the_contracts_errors(sandbox_settings) -> None:
    make_project("Alpha", "101")
    good = _auth("sa.user", "secret-101")
    answer = _post('properties["$email"] == "jane.doe@example.com"', auth=good).json()
    assert answer["status"] == "ok" and answer["page"] == 0 and answer["page_size"] == engage.PAGE_SIZE
    assert sorted(r["$distinct_id"] for r in answer["results"]) == [
        "$device:5f0c9a7e-1d2b-4c8e-9f3a-2b7d6e1c4a90",
        "user-1001",
    ]
    # Exact and case-sensitive, as Mixpanel's ==.
    assert _post('properties["$email"] == "Jane.Doe@example.com"', auth=good).json()["results"] == []
    assert _post('properties["$email"] == "x" or true', auth=good).status_code == 400
    assert _post('properties["$email"] == "x"', auth=_auth("sa.user", "wrong")).status_code == 401
    assert _post('properties["$email"] == "x"', auth=good, project_id="999").status_code == 401


@pytest.mark.django_db
def test_the_sandbox_allows_60_queries_per_scaled_hour(sandbox_settings) -> None:
    make_project("Alpha", "101")
    good = _auth("sa.user", "secret-101")
    statuses = [_post('properties["$email"] == "a@b.c"', auth=good).status_code for _ in range(61)]
    assert statuses[:60] == [200] * 60
    refused = _post('properties["$email"] == "a@b.c"', auth=good)
    assert statuses[60] == 429 and refused.status_code == 429 and int(refused["Retry-After"]) >= 1


@pytest.mark.django_db(transaction=True)
def test_an_email_only_request_resolves_end_to_end_against_the_sandbox(
    sandbox_settings, live_server, clock, django_capture_on_commit_callbacks
) -> None:
    from gdpr_requests.audit.chain import Actor
    from gdpr_requests.projects.services import project_update

    project = make_project("Alpha", "101")
    project_update(
        project=project, actor=Actor.system(), base_url_override=f"{live_server.url}/sandbox/mixpanel/api/app"
    )
    (jane,) = make_verified(["jane.doe@example.com"], projects=[project])
    drive(clock, django_capture_on_commit_callbacks)
    assert IdentityLookup.objects.get(request=jane).status == LookupStatus.DONE
    found = IdentityCandidate.objects.filter(request=jane).order_by("distinct_id")
    assert [(c.distinct_id, c.profile_name) for c in found] == [
        ("$device:5f0c9a7e-1d2b-4c8e-9f3a-2b7d6e1c4a90", ""),
        ("user-1001", "Jane Doe"),
    ]


@pytest.mark.django_db(transaction=True)
def test_the_demo_email_only_request_resolves_against_the_sandbox(
    sandbox_settings, live_server, clock, django_capture_on_commit_callbacks
) -> None:
    import io

    from django.core.management import call_command

    from gdpr_requests.identity.demo import DEMO_EMAIL
    from gdpr_requests.models import DataSubjectRequest
    from tests.conftest import ensure_roles

    ensure_roles()  # an earlier transactional test's flush removed the groups demo_setup expects
    sandbox_settings.SITE_URL = live_server.url
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    call_command("demo_setup", stdout=io.StringIO())  # idempotent
    assert "Profile lookups" in out.getvalue()
    drive(clock, django_capture_on_commit_callbacks)
    jane = DataSubjectRequest.objects.get(requester_email=DEMO_EMAIL)
    assert IdentityLookup.objects.get(request=jane).status == LookupStatus.DONE
    assert IdentityCandidate.objects.filter(request=jane).count() == 2
