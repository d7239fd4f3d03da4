"""The built-in Mixpanel sandbox: the contract of MIXPANEL_GDPR_API.md, served by the app itself.

Most tests drive the views with Django's test client; the ones at the end run the real MixpanelClient against
``live_server``, which is how the pipeline meets the sandbox in ``make run``. Time moves with time-machine
(task progress and the database rate limit read the clock); nothing is mocked.
"""

from __future__ import annotations

import importlib
import io
import json
import time
import zipfile
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import pyzipper
import time_machine
from django.test import Client
from django.urls import Resolver404, clear_url_caches, resolve

from gdpr_requests.mixpanel import client as mp
from gdpr_requests.models import MixpanelProject, TaskKind
from mixpanel_sandbox.models import SandboxRateSlot, SandboxTask
from mixpanel_sandbox import views as sandbox

API = "/sandbox/mixpanel/api/app"
TOKEN = "sandbox-project-token"
OAUTH = "sandbox-oauth-credential"
SECRET = "sandbox-api-secret"
OWNER = "owner@mixpanel-user.example"
STEP = 3.0
START = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def sandbox_settings(settings):
    """A quiet sandbox: enabled, 3-second steps, no rate limit and no faults unless a test turns them on."""
    settings.MIXPANEL_SANDBOX_ENABLED = True
    settings.MIXPANEL_SANDBOX_STEP_SECONDS = STEP
    settings.MIXPANEL_SANDBOX_RATE_LIMIT = False
    settings.MIXPANEL_SANDBOX_FAULT_429 = 0.0
    settings.MIXPANEL_SANDBOX_FAULT_5XX = 0.0
    settings.MIXPANEL_SANDBOX_FAULT_SLOW = 0.0
    settings.MIXPANEL_SANDBOX_FAULT_FAILURE = 0.0
    return settings


def make_project(name: str = "Sandboxed", *, token: str = TOKEN, api_secret: str = SECRET, **extra) -> MixpanelProject:
    values = {
        "name": name,
        "mixpanel_project_id": "424242",
        "project_token": token,
        "oauth_token": OAUTH,
        "token_owner_email": OWNER,
        "api_secret": api_secret,
        "token_expires_on": datetime(2027, 1, 1).date(),
        "base_url_override": "http://testserver" + API,
    }
    values.update(extra)
    return MixpanelProject.objects.create(**values)


@pytest.fixture
def sandbox_project(db) -> MixpanelProject:
    return make_project()


class Api:
    """The sandbox through Django's test client, with the project's token and credential by default."""

    def __init__(self, client: Client, token: str = TOKEN, oauth: str = OAUTH) -> None:
        self.client = client
        self.token = token
        self.oauth = oauth

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.oauth}"} if self.oauth else {}

    def create(self, kind: str, body, *, raw: bool = False):
        data = body if raw else json.dumps(body)
        return self.client.post(
            f"{API}/data-{kind}/v3.0/?token={self.token}",
            data=data,
            content_type="application/json",
            headers=self._headers(),
        )

    def status(self, kind: str, tracking_id: str):
        return self.client.get(f"{API}/data-{kind}/v3.0/{tracking_id}?token={self.token}", headers=self._headers())

    def cancel(self, tracking_id: str, kind: str = "deletions"):
        return self.client.delete(f"{API}/data-{kind}/v3.0/{tracking_id}?token={self.token}", headers=self._headers())

    def create_ok(self, kind: str, ids: list[str], **extra) -> str:
        response = self.create(kind, {"distinct_ids": ids, **extra})
        assert response.status_code == 201, response.content
        return response.json()["results"]["task_id"]


@pytest.fixture
def api(client, sandbox_project) -> Api:
    return Api(client)


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def open_archive(data: bytes, password: str | None = None) -> dict[str, bytes]:
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        if password:
            archive.setpassword(password.encode())
        return {name: archive.read(name) for name in archive.namelist()}


# --- creates ------------------------------------------------------------------------------------------


def test_create_deletion_answers_201_with_a_numeric_task_id(api):
    response = api.create("deletions", {"distinct_ids": ["d-1", "d-2"], "compliance_type": "GDPR"})

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "ok"
    task_id = body["results"]["task_id"]
    assert task_id.isdigit()
    task = SandboxTask.objects.get(tracking_id=task_id)
    assert (task.kind, task.compliance_type, task.distinct_ids) == (TaskKind.DELETION, "GDPR", ["d-1", "d-2"])


def test_create_retrieval_answers_201_with_a_uuid_task_id_and_defaults(api):
    response = api.create("retrievals", {"distinct_ids": ["r-1", "r-1", "r-2"]})

    assert response.status_code == 201
    task_id = response.json()["results"]["task_id"]
    assert len(task_id) == 36 and task_id.count("-") == 4
    task = SandboxTask.objects.get(tracking_id=task_id)
    # Defaults from the contract (GDPR, Data); duplicate ids count once.
    assert (task.compliance_type, task.disclosure_type, task.distinct_ids) == ("GDPR", "Data", ["r-1", "r-2"])


def test_create_takes_the_path_without_its_trailing_slash(api, client):
    response = client.post(
        f"{API}/data-deletions/v3.0?token={TOKEN}",
        data=json.dumps({"distinct_ids": ["x"]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {OAUTH}"},
    )
    assert response.status_code == 201


def test_create_is_csrf_exempt(sandbox_project):
    strict = Api(Client(enforce_csrf_checks=True))
    assert strict.create("deletions", {"distinct_ids": ["c-1"]}).status_code == 201


# --- status shapes and progression --------------------------------------------------------------------


def test_deletion_status_has_the_documented_shape(api, clock):
    task_id = api.create_ok("deletions", ["d-1", "d-2"], compliance_type="CCPA")

    response = api.status("deletions", task_id)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    results = body["results"]
    assert set(results) == {
        "tracking_id", "status", "requesting_user", "compliance_type", "project_id", "date_requested", "distinct_ids",
    }  # fmt: skip
    assert results["tracking_id"] == task_id
    assert results["status"] == "PENDING"
    assert results["requesting_user"] == OWNER
    assert results["compliance_type"].upper() == "CCPA"
    assert results["project_id"] == 424242 and isinstance(results["project_id"], int)
    assert results["date_requested"] == "2026-03-02T12:00:00"  # ISO, UTC, no zone
    assert results["distinct_ids"] == ["d-1", "d-2"]


def test_deletion_status_names_a_demo_owner_and_a_number_when_the_project_lacks_them(client, db):
    make_project("Bare", token="bare-token", token_owner_email="", mixpanel_project_id="abc")
    bare = Api(client, token="bare-token")
    task_id = bare.create_ok("deletions", ["x"])

    results = bare.status("deletions", task_id).json()["results"]

    assert results["requesting_user"] == sandbox.DEMO_REQUESTING_USER
    assert isinstance(results["project_id"], int)


def test_compliance_type_comes_in_lower_case_for_odd_tracking_ids(api, sandbox_project):
    for tracking_id in ("100000000001", "100000000002"):
        SandboxTask.objects.create(
            tracking_id=tracking_id, kind=TaskKind.DELETION, project=sandbox_project, project_token=TOKEN,
            compliance_type="GDPR", distinct_ids=["x"],
        )  # fmt: skip

    odd = api.status("deletions", "100000000001").json()["results"]["compliance_type"]
    even = api.status("deletions", "100000000002").json()["results"]["compliance_type"]

    assert (odd, even) == ("gdpr", "GDPR")


def test_tasks_advance_one_status_per_step_from_their_creation(api, clock):
    deletion = api.create_ok("deletions", ["d-1"])
    retrieval = api.create_ok("retrievals", ["r-1"])
    seen = []
    for offset in (0, STEP - 0.1, STEP + 0.1, 2 * STEP + 0.1, 3 * STEP + 0.1, 30 * STEP):
        clock.move_to(START + timedelta(seconds=offset))
        seen.append(
            (api.status("deletions", deletion).json()["results"]["status"],
             api.status("retrievals", retrieval).json()["results"]["status"])
        )  # fmt: skip

    expected = ["PENDING", "PENDING", "STAGING", "STARTED", "SUCCESS", "SUCCESS"]
    assert seen == list(zip(expected, expected, strict=True))


def test_retrieval_link_appears_only_at_success_as_an_absolute_url_on_the_same_host(api, clock):
    task_id = api.create_ok("retrievals", ["r-1"])

    clock.move_to(START + timedelta(seconds=2 * STEP + 0.1))
    started = api.status("retrievals", task_id).json()["results"]
    clock.move_to(START + timedelta(seconds=3 * STEP + 0.1))
    done = api.status("retrievals", task_id).json()["results"]

    assert (started["status"], started["result"]) == ("STARTED", "")
    assert done["status"] == "SUCCESS"
    assert done["distinct_ids"] == ["r-1"]
    link = urlsplit(done["result"])
    assert (link.scheme, link.netloc) == ("http", "testserver")
    assert link.path.startswith("/sandbox/mixpanel/download/")
    assert task_id not in done["result"]  # the link is signed, not a guessable path


def test_step_seconds_of_zero_finishes_tasks_at_once(api, settings):
    settings.MIXPANEL_SANDBOX_STEP_SECONDS = 0
    task_id = api.create_ok("deletions", ["d-1"])
    assert api.status("deletions", task_id).json()["results"]["status"] == "SUCCESS"


def test_unknown_or_foreign_tracking_id_answers_404_json(api, client, db):
    make_project("Other", token="other-token")
    foreign = Api(client, token="other-token").create_ok("deletions", ["x"])
    retrieval = api.create_ok("retrievals", ["x"])

    for kind, tracking_id in (("deletions", "999"), ("deletions", foreign), ("deletions", retrieval)):
        response = api.status(kind, tracking_id)
        assert response.status_code == 404
        assert response.json() == {"status": "error", "error": "task not found"}


# --- the ZIP ------------------------------------------------------------------------------------------


def download_link(api: Api, clock, ids: list[str], **extra) -> str:
    task_id = api.create_ok("retrievals", ids, **extra)
    clock.move_to(START + timedelta(seconds=3 * STEP + 1))
    return api.status("retrievals", task_id).json()["results"]["result"]


def test_archive_is_an_aes_zip_locked_with_the_projects_api_secret(api, client, clock):
    ids = ["r-1", "weird/../id"]
    link = download_link(api, clock, ids)

    response = client.get(link)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    data = response.content
    with pyzipper.AESZipFile(io.BytesIO(data)) as archive:
        assert all(info.flag_bits & 0x1 for info in archive.infolist())  # every entry encrypted
        with pytest.raises(RuntimeError):
            archive.read("events.json")  # no password
    with pytest.raises(RuntimeError):
        open_archive(data, "wrong-secret")
    files = open_archive(data, SECRET)
    assert sorted(files) == ["events.json", "manifest.json", "profiles.json"]
    events = json.loads(files["events.json"])
    assert {event["properties"]["distinct_id"] for event in events} == set(ids)
    assert len(events) >= 3 * len(ids)
    assert all(not name.startswith("/") and ".." not in name for name in files)
    assert {profile["$distinct_id"] for profile in json.loads(files["profiles.json"])} == set(ids)
    manifest = json.loads(files["manifest.json"])
    assert manifest["distinct_id_count"] == 2 and manifest["compliance_type"] == "GDPR"


def test_archive_is_a_plain_zip_when_the_project_has_no_api_secret(client, db, clock):
    make_project("No secret", token="plain-token", api_secret="")
    plain = Api(client, token="plain-token")
    link = download_link(plain, clock, ["p-1"])

    data = client.get(link).content

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        events = json.loads(archive.read("events.json"))
    assert {event["properties"]["distinct_id"] for event in events} == {"p-1"}


def test_archive_compresses_like_real_data_not_like_a_bomb(api, client, clock):
    link = download_link(api, clock, [f"user-{n}" for n in range(200)])

    with pyzipper.AESZipFile(io.BytesIO(client.get(link).content)) as archive:
        ratios = {info.filename: info.file_size / info.compress_size for info in archive.infolist()}

    # The pipeline refuses entries that expand much more than real exports do (a zip bomb check).
    assert max(ratios.values()) < 20, ratios


def test_ccpa_categories_disclosure_gives_only_the_categories(api, client, clock):
    link = download_link(api, clock, ["r-1"], compliance_type="CCPA", disclosure_type="Categories")

    files = open_archive(client.get(link).content, SECRET)

    assert sorted(files) == ["categories.json", "manifest.json"]
    assert json.loads(files["categories.json"])["categories"]


def test_download_link_refuses_tampering_and_expires(api, client, clock):
    link = download_link(api, clock, ["r-1"])
    prefix, _, signed = link.rpartition("/")

    tampered = client.get(f"{prefix}/{signed[:-2]}{'AA' if not signed.endswith('AA') else 'BB'}")
    clock.move_to(START + timedelta(seconds=3 * STEP + 1 + sandbox.LINK_MAX_AGE_SECONDS + 5))
    expired = client.get(link)

    assert tampered.status_code == 404
    assert expired.status_code == 410
    assert "expired" in expired.json()["error"]


def test_download_of_a_revoked_or_unfinished_retrieval_is_not_found(api, client, clock, sandbox_project):
    link = download_link(api, clock, ["r-1"])
    task = SandboxTask.objects.get(kind=TaskKind.RETRIEVAL)
    SandboxTask.objects.filter(pk=task.pk).update(revoked_at=START)

    assert client.get(link).status_code == 404


# --- rate limit ---------------------------------------------------------------------------------------


def test_a_second_call_within_a_second_is_refused_with_429(api, settings, clock):
    # A per-process cache cannot hold a limit for several web processes: the database does then.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "t"}}
    settings.MIXPANEL_SANDBOX_RATE_LIMIT = True
    task_id = api.create_ok("deletions", ["d-1"])

    clock.move_to(START + timedelta(seconds=0.4))
    refused = api.status("deletions", task_id)
    clock.move_to(START + timedelta(seconds=0.9))
    refused_again = api.cancel(task_id)
    clock.move_to(START + timedelta(seconds=1.0))
    allowed = api.status("deletions", task_id)

    assert refused.status_code == 429
    assert refused.json() == {"status": "error", "error": "this API is limited to 1 req/s"}
    assert refused["Retry-After"] == "1"
    assert refused_again.status_code == 429
    assert allowed.status_code == 200  # refused calls did not push the window out
    assert SandboxRateSlot.objects.filter(project_token=TOKEN).count() == 1  # held in the database


def test_the_rate_limit_is_per_project_token(api, client, settings, clock):
    settings.MIXPANEL_SANDBOX_RATE_LIMIT = True
    make_project("Second", token="second-token")

    first = api.create("deletions", {"distinct_ids": ["a"]})
    second = Api(client, token="second-token").create("deletions", {"distinct_ids": ["a"]})

    assert (first.status_code, second.status_code) == (201, 201)


def test_the_rate_limit_lives_in_redis_when_the_cache_is_redis(api, settings, require_redis):
    from django.core.cache import cache

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": require_redis}}
    cache.clear()
    settings.MIXPANEL_SANDBOX_RATE_LIMIT = True
    try:
        first = api.create("deletions", {"distinct_ids": ["a"]})
        second = api.create("deletions", {"distinct_ids": ["b"]})
        time.sleep(1.05)
        third = api.create("deletions", {"distinct_ids": ["b"]})
    finally:
        cache.clear()

    assert [first.status_code, second.status_code, third.status_code] == [201, 429, 201]
    assert second["Retry-After"] == "1"
    assert not SandboxRateSlot.objects.exists()


# --- conflicts and cancels ----------------------------------------------------------------------------


def test_a_deletion_naming_ids_of_a_running_deletion_answers_409(api, clock):
    running = api.create_ok("deletions", ["a", "b"])

    clock.move_to(START + timedelta(seconds=2 * STEP + 0.5))  # STARTED: still running
    response = api.create("deletions", {"distinct_ids": ["c", "b", "a"]})

    assert response.status_code == 409
    assert response.json() == {
        "status": "error",
        "error": {
            "conflicting_distinct_ids": ["b", "a"],
            "conflicting_task_ids": [running],
            "error": "a deletion is already running for some of these distinct ids",
        },
    }
    assert SandboxTask.objects.count() == 1  # the whole request was rejected


def test_ids_of_a_finished_or_revoked_deletion_or_a_retrieval_do_not_conflict(api, clock):
    revoked = api.create_ok("deletions", ["a"])
    assert api.cancel(revoked).status_code == 204
    api.create_ok("retrievals", ["b"])
    api.create_ok("deletions", ["c"])
    clock.move_to(START + timedelta(seconds=3 * STEP + 0.1))  # the deletion of c is final now

    response = api.create("deletions", {"distinct_ids": ["a", "b", "c"]})

    assert response.status_code == 201


def test_cancel_is_allowed_while_pending_or_staging(api, clock):
    pending = api.create_ok("deletions", ["a"])
    staging = api.create_ok("deletions", ["b"])
    clock.move_to(START + timedelta(seconds=0.5))
    first = api.cancel(pending)
    clock.move_to(START + timedelta(seconds=STEP + 0.5))
    second = api.cancel(staging)

    assert (first.status_code, first.content) == (204, b"")
    assert (second.status_code, second.content) == (204, b"")
    clock.move_to(START + timedelta(seconds=10 * STEP))
    assert api.status("deletions", pending).json()["results"]["status"] == "REVOKED"
    assert api.status("deletions", staging).json()["results"]["status"] == "REVOKED"


@pytest.mark.parametrize(("offset", "status"), [(2 * STEP + 0.1, "STARTED"), (3 * STEP + 0.1, "SUCCESS")])
def test_cancel_is_refused_once_started_or_final(api, clock, offset, status):
    task_id = api.create_ok("deletions", ["a"])
    clock.move_to(START + timedelta(seconds=offset))

    response = api.cancel(task_id)

    assert response.status_code == 400
    assert response.json()["error"] == (
        f"the task is {status} and can no longer be cancelled (only PENDING or STAGING can)"
    )
    assert api.status("deletions", task_id).json()["results"]["status"] == status


def test_cancelling_twice_is_refused_the_second_time(api):
    task_id = api.create_ok("deletions", ["a"])
    assert api.cancel(task_id).status_code == 204

    response = api.cancel(task_id)

    assert response.status_code == 400
    assert "REVOKED" in response.json()["error"]


def test_retrievals_cannot_be_cancelled(api):
    task_id = api.create_ok("retrievals", ["a"])

    response = api.cancel(task_id, kind="retrievals")

    assert response.status_code == 405
    assert response["Allow"] == "GET"


# --- auth and bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "oauth", "message"),
    [
        ("", OAUTH, "missing project token"),
        ("no-such-token", OAUTH, "unknown project token"),
        (TOKEN, "", "missing credentials"),
        (TOKEN, "not-the-credential", "invalid OAuth token"),
    ],
)
def test_bad_auth_answers_401_with_an_error_body(client, sandbox_project, token, oauth, message):
    caller = Api(client, token=token, oauth=oauth)

    for response in (caller.create("deletions", {"distinct_ids": ["a"]}), caller.status("deletions", "1")):
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == "error"
        assert body["error"].startswith(message)
    assert not SandboxTask.objects.exists()


def test_basic_auth_is_refused(client, sandbox_project):
    response = client.get(f"{API}/data-deletions/v3.0/1?token={TOKEN}", headers={"Authorization": f"Basic {OAUTH}"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "request body is not valid JSON"),
        ("", "request body must be a JSON object with distinct_ids"),
        ('["a"]', "request body must be a JSON object"),
        ("{}", "distinct_ids is required"),
        ('{"distinct_ids": "a"}', "distinct_ids must be an array of strings"),
        ('{"distinct_ids": []}', "distinct_ids must not be empty"),
        ('{"distinct_ids": ["a", 3]}', "every distinct id must be a non-empty string"),
        ('{"distinct_ids": ["a", "  "]}', "every distinct id must be a non-empty string"),
        (json.dumps({"distinct_ids": [f"u{n}" for n in range(2001)]}), "distinct_ids may contain at most 2000 ids"),
        ('{"distinct_ids": ["a"], "compliance_type": "HIPAA"}', "compliance_type must be one of GDPR, CCPA"),
        ('{"distinct_ids": ["a"], "compliance_type": 1}', "compliance_type must be one of GDPR, CCPA"),
    ],
)
def test_bad_bodies_answer_400_with_a_clear_error(api, body, message):
    for kind in ("deletions", "retrievals"):
        response = api.create(kind, body, raw=True)
        assert response.status_code == 400
        assert response.json()["status"] == "error"
        assert response.json()["error"].startswith(message)
    assert not SandboxTask.objects.exists()


def test_bad_disclosure_type_answers_400(api):
    response = api.create("retrievals", {"distinct_ids": ["a"], "disclosure_type": "Everything"})
    assert response.status_code == 400
    assert response.json()["error"] == "disclosure_type must be one of Data, Categories, Sources"


def test_exactly_2000_ids_are_accepted(api):
    assert api.create("deletions", {"distinct_ids": [f"u{n}" for n in range(2000)]}).status_code == 201


def test_wrong_methods_answer_405_json(api, client):
    response = client.get(f"{API}/data-deletions/v3.0/?token={TOKEN}", headers={"Authorization": f"Bearer {OAUTH}"})
    assert response.status_code == 405
    assert response.json()["status"] == "error"


# --- fault knobs --------------------------------------------------------------------------------------


def test_fault_5xx_answers_a_server_error(api, settings):
    settings.MIXPANEL_SANDBOX_FAULT_5XX = 1.0
    response = api.create("deletions", {"distinct_ids": ["a"]})
    assert response.status_code in (500, 502, 503)
    assert not SandboxTask.objects.exists()


def test_fault_429_answers_rate_limited_without_retry_after(api, settings):
    settings.MIXPANEL_SANDBOX_FAULT_429 = 1.0
    response = api.create("deletions", {"distinct_ids": ["a"]})
    assert response.status_code == 429
    assert response.json()["error"] == sandbox.RATE_LIMIT_MESSAGE
    assert "Retry-After" not in response


def test_fault_failure_ends_tasks_in_failure_without_a_link(api, settings, clock):
    settings.MIXPANEL_SANDBOX_FAULT_FAILURE = 1.0
    deletion = api.create_ok("deletions", ["a"])
    retrieval = api.create_ok("retrievals", ["b"])
    clock.move_to(START + timedelta(seconds=2 * STEP + 0.1))
    started = api.status("deletions", deletion).json()["results"]["status"]
    clock.move_to(START + timedelta(seconds=3 * STEP + 0.1))

    assert started == "STARTED"
    assert api.status("deletions", deletion).json()["results"]["status"] == "FAILURE"
    assert api.status("retrievals", retrieval).json()["results"] == {
        "status": "FAILURE", "result": "", "distinct_ids": ["b"],
    }  # fmt: skip


def test_fault_slow_delays_the_answer_within_its_bound(api, settings, monkeypatch):
    settings.MIXPANEL_SANDBOX_FAULT_SLOW = 1.0
    monkeypatch.setattr(sandbox, "SLOW_MAX_SECONDS", 0.4)

    started = time.monotonic()
    response = api.create("deletions", {"distinct_ids": ["a"]})
    elapsed = time.monotonic() - started

    assert response.status_code == 201
    assert 0.2 <= elapsed < 2.0


def test_fault_probability_zero_never_fires(api, settings):
    for _ in range(20):
        assert api.create("retrievals", {"distinct_ids": ["a"]}).status_code == 201


# --- switched off -------------------------------------------------------------------------------------


def test_views_answer_404_when_the_sandbox_is_disabled(api, client, settings, clock):
    link = download_link(api, clock, ["r-1"])
    task_id = api.create_ok("deletions", ["a"])
    settings.MIXPANEL_SANDBOX_ENABLED = False

    responses = [
        api.create("deletions", {"distinct_ids": ["b"]}),
        api.status("deletions", task_id),
        api.cancel(task_id),
        client.get(link),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert SandboxTask.objects.count() == 2


def test_the_sandbox_is_not_mounted_when_disabled(settings):
    import compliance.urls

    original = settings.MIXPANEL_SANDBOX_ENABLED
    try:
        settings.MIXPANEL_SANDBOX_ENABLED = False
        clear_url_caches()
        importlib.reload(compliance.urls)
        with pytest.raises(Resolver404):
            resolve(f"{API}/data-deletions/v3.0/")
    finally:
        settings.MIXPANEL_SANDBOX_ENABLED = original
        clear_url_caches()
        importlib.reload(compliance.urls)
    assert resolve(f"{API}/data-deletions/v3.0/").func is sandbox.deletions_collection


# --- the real client against live_server --------------------------------------------------------------


@pytest.fixture
def live_client(live_server, settings):
    """The pipeline's HTTP client, unchanged, pointed at the sandbox of a live test server."""
    make_project("Live")
    base_url = live_server.url + API
    credentials = mp.Credentials(base_url=base_url, project_token=TOKEN, oauth_token=OAUTH, integration_id="test")
    return mp.MixpanelClient(credentials, timeout=10)


def wait_for(check, *, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_real_client_deletion_round_trip(live_client, settings):
    settings.MIXPANEL_SANDBOX_STEP_SECONDS = 0.2
    task_id = live_client.create_deletion(distinct_ids=["a", "b"], compliance_type="GDPR")

    first = live_client.deletion_status(tracking_id=task_id)
    done = wait_for(lambda: (s := live_client.deletion_status(tracking_id=task_id)).status == "SUCCESS" and s)

    assert isinstance(first, mp.DeletionStatus)
    assert first.status in ("PENDING", "STAGING")
    assert done.tracking_id == task_id
    assert done.requesting_user == OWNER
    assert done.compliance_type == "GDPR"
    assert done.project_id == 424242
    assert done.date_requested is not None and done.date_requested.tzinfo is not None
    assert abs((done.date_requested - datetime.now(UTC)).total_seconds()) < 60
    assert done.distinct_ids == ["a", "b"]


def test_real_client_conflict_and_cancel(live_client, settings):
    settings.MIXPANEL_SANDBOX_STEP_SECONDS = 60
    running = live_client.create_deletion(distinct_ids=["a", "b"])

    with pytest.raises(mp.Conflict) as conflict:
        live_client.create_deletion(distinct_ids=["b", "c"])
    live_client.cancel_deletion(tracking_id=running)
    resubmitted = live_client.create_deletion(distinct_ids=["b", "c"])

    assert conflict.value.conflicting_distinct_ids == ["b"]
    assert conflict.value.conflicting_task_ids == [running]
    assert live_client.deletion_status(tracking_id=running).status == "REVOKED"
    assert resubmitted != running
    settings.MIXPANEL_SANDBOX_STEP_SECONDS = 0  # now everything is final: cancelling is refused
    with pytest.raises(mp.Permanent):
        live_client.cancel_deletion(tracking_id=resubmitted)


def test_real_client_retrieval_and_download_of_the_locked_zip(live_client, live_server, settings):
    settings.MIXPANEL_SANDBOX_STEP_SECONDS = 0.2
    task_id = live_client.create_retrieval(distinct_ids=["a", "b"], compliance_type="CCPA", disclosure_type="Data")

    status = wait_for(lambda: (s := live_client.retrieval_status(tracking_id=task_id)).status == "SUCCESS" and s)
    data = live_client.download(
        url=status.result_url, allowed_hosts={urlsplit(live_server.url).hostname}, max_bytes=10_000_000
    )

    assert status.distinct_ids == ["a", "b"]
    files = open_archive(data, SECRET)
    events = json.loads(files["events.json"])
    assert {event["properties"]["distinct_id"] for event in events} == {"a", "b"}
    # A CCPA retrieval covers only the previous year.
    oldest = min(event["properties"]["time"] for event in events)
    assert oldest >= (datetime.now(UTC) - timedelta(days=366)).timestamp()


def test_real_client_sees_every_error_class(live_client, live_server, settings):
    settings.MIXPANEL_SANDBOX_RATE_LIMIT = True
    live_client.create_deletion(distinct_ids=["a"])
    with pytest.raises(mp.RateLimited) as limited:
        live_client.deletion_status(tracking_id="1")
    time.sleep(1.05)
    with pytest.raises(mp.NotFound):
        live_client.deletion_status(tracking_id="1")
    settings.MIXPANEL_SANDBOX_RATE_LIMIT = False
    with pytest.raises(mp.Permanent):
        live_client.create_deletion(distinct_ids=[str(n) for n in range(2001)])
    wrong = mp.MixpanelClient(
        mp.Credentials(base_url=live_server.url + API, project_token=TOKEN, oauth_token="nope", integration_id="t"),
        timeout=10,
    )
    with pytest.raises(mp.CredentialFailure):
        wrong.create_deletion(distinct_ids=["a"])
    settings.MIXPANEL_SANDBOX_FAULT_5XX = 1.0
    with pytest.raises(mp.Transient):
        live_client.create_retrieval(distinct_ids=["a"])

    assert limited.value.retry_after == 1.0


def test_concurrent_calls_from_separate_connections_get_exactly_one_slot(live_server, settings):
    # Each request thread of the live server has its own database connection, as separate web processes
    # would: the conditional UPDATE must let exactly one of a burst through.
    import threading

    import requests

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "t"}}
    settings.MIXPANEL_SANDBOX_RATE_LIMIT = True
    make_project("Live")
    url = f"{live_server.url}{API}/data-retrievals/v3.0/?token={TOKEN}"
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def call() -> None:
        barrier.wait(timeout=5)
        response = requests.post(
            url, json={"distinct_ids": ["a"]}, headers={"Authorization": f"Bearer {OAUTH}"}, timeout=10
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)

    assert sorted(statuses) == [201, 429, 429, 429, 429, 429]
    assert SandboxTask.objects.count() == 1


def test_demo_setup_points_its_project_at_the_sandbox_with_an_api_secret(db, settings):
    from django.core.management import call_command

    settings.SITE_URL = "http://127.0.0.1:8123"
    call_command("demo_setup", stdout=io.StringIO())
    call_command("demo_setup", stdout=io.StringIO())  # idempotent

    project = MixpanelProject.objects.get()
    assert project.base_url == "http://127.0.0.1:8123/sandbox/mixpanel/api/app"
    assert len(project.api_secret) >= 16
    assert resolve(urlsplit(project.base_url + "/data-deletions/v3.0/").path).func is sandbox.deletions_collection
