"""The readable part of an access export: index.html and README.txt next to Mixpanel's JSON, pages per file."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import json
import re
import zipfile
from datetime import UTC, datetime

import pytest

from gdpr_requests.models import SubjectExport
from gdpr_requests.requests import exports, readable_export, states
from tests.unit.pipeline.pipeline_support import (  # noqa: F401
    approve,
    clock,
    drive,
    make_zip,
    mixpanel,
    pipeline_settings,
    statuses,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings")]

SIGNED_UP = datetime(2025, 3, 4, 12, 30, 5, tzinfo=UTC)
EVENTS = [
    {
        "event": "Signed up",
        "properties": {
            "time": int(SIGNED_UP.timestamp()),
            "distinct_id": "subject-1",
            "$insert_id": "a1b2c3d4e5",
            "$browser": "Firefox",
            "$city": "Lyon",
            "plan": "<b>pro</b>",
        },
    },
    {"event": "Viewed page", "properties": {"time": int(SIGNED_UP.timestamp()) + 60, "$current_url": "/pricing"}},
]
PROFILES = [
    {"$distinct_id": "subject-1", "$properties": {"$city": "Lyon", "plan": "pro", "$created": "2025-03-04T12:30:05"}}
]
MANIFEST = {"tracking_id": "trk-1", "files": ["events.json", "profiles.json"]}


def archive_of(dsr) -> dict[str, bytes]:
    export = SubjectExport.objects.get(request=dsr)
    with exports.export_open(export) as handle, zipfile.ZipFile(handle) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def retrieve(clock, mixpanel, make_request, staff_actor, members: dict[str, bytes]):
    mixpanel.result_body = make_zip(members)
    dsr = approve(make_request, staff_actor, kind="access", distinct_ids=["subject-1"])
    drive(clock)
    assert statuses(dsr) == [states.COMPLETED]
    return archive_of(dsr), dsr


@pytest.fixture
def art15(settings):
    settings.TIME_ZONE = "Europe/Paris"
    settings.ORGANISATION_NAME = "Example Ltd"
    settings.DSR_ART15_PURPOSES = "Improving our product."
    settings.DSR_ART15_RECIPIENTS = "Mixpanel, Inc."
    settings.DSR_ART15_RETENTION = "Two years."
    settings.DSR_ART15_SOURCE = "Your use of our app."
    settings.DSR_ART15_COMPLAINT = "The CNIL (cnil.fr)."


def test_the_export_has_an_offline_index_and_readme_next_to_the_original_files(
    clock, mixpanel, make_request, staff_actor, project, art15
):
    files, dsr = retrieve(
        clock,
        mixpanel,
        make_request,
        staff_actor,
        {
            "events.json": json.dumps(EVENTS).encode(),
            "profiles.json": json.dumps(PROFILES).encode(),
            "manifest.json": json.dumps(MANIFEST).encode(),
        },
    )
    # The originals are kept as Mixpanel sent them.
    assert json.loads(files["main-app/events.json"]) == EVENTS
    index = files["index.html"].decode()
    assert "<script" not in index.lower() and "http://" not in index and "https://" not in index
    assert "Your data held by Example Ltd" in index and dsr.reference in index
    assert "<li>Main app</li>" in index  # the project searched
    for text in ("Improving our product.", "Mixpanel, Inc.", "Two years.", "Your use of our app.", "The CNIL"):
        assert text in index
    assert "main-app/events.json" in index and "what you did and when" in index
    links = re.findall(r'href="(readable/[^"]+)"', index)
    assert len(links) == 3 and all(link in files for link in links)

    events_page = files["readable/main-app--events-1.html"].decode()
    assert "<script" not in events_page.lower()
    # Local time (Paris is UTC+1 in March), readable property names, technical ids left out, data escaped.
    assert "4 Mar 2025, 13:30:05" in events_page
    assert "Signed up" in events_page and "Browser: Firefox" in events_page and "City: Lyon" in events_page
    assert "a1b2c3d4e5" not in events_page and "subject-1" not in events_page
    assert "&lt;b&gt;pro&lt;/b&gt;" in events_page and "<b>pro</b>" not in events_page
    assert 'href="../index.html"' in events_page

    profile_page = files["readable/main-app--profiles-1.html"].decode()
    assert "<dt>City</dt><dd>Lyon</dd>" in profile_page and "<dt>plan</dt><dd>pro</dd>" in profile_page
    assert "<dt>Profile created</dt><dd>4 Mar 2025, 13:30:05</dd>" in profile_page

    readme = files["README.txt"].decode()
    assert "Example Ltd" in readme and dsr.reference in readme and "- Main app" in readme
    assert "main-app/events.json (2 entries)" in readme and "The CNIL (cnil.fr)." in readme


def test_a_large_file_is_split_into_pages_that_link_to_each_other(
    clock, mixpanel, make_request, staff_actor, project, monkeypatch
):
    monkeypatch.setattr(readable_export, "ROWS_PER_PAGE", 10)
    many = [{"event": f"Event {n}", "properties": {"time": 1_700_000_000 + n}} for n in range(25)]
    files, _dsr = retrieve(clock, mixpanel, make_request, staff_actor, {"events.json": json.dumps(many).encode()})
    pages = sorted(name for name in files if name.startswith("readable/"))
    assert pages == [f"readable/main-app--events-{n}.html" for n in (1, 2, 3)]
    second = files["readable/main-app--events-2.html"].decode()
    assert "Rows 11 to 20 of 25, page 2 of 3." in second
    assert 'href="main-app--events-1.html">Previous page' in second and 'href="main-app--events-3.html">Next' in second
    assert second.count("<tr>") == 1 + 10  # the header and ten rows
    assert "Event 10" in second and "Event 20" not in second


def test_without_art15_settings_the_export_says_whom_to_ask(
    clock, mixpanel, make_request, staff_actor, project, settings
):
    settings.DSR_ART15_PURPOSES = ""
    settings.PRIVACY_CONTACT_EMAIL = "privacy@example.org"
    files, _dsr = retrieve(clock, mixpanel, make_request, staff_actor, {"events.json": b"[]"})
    assert "Ask us at privacy@example.org." in files["index.html"].decode()


def test_without_a_complaint_setting_the_export_states_the_right_to_complain(
    clock, mixpanel, make_request, staff_actor, project, settings
):
    settings.DSR_ART15_COMPLAINT = ""
    files, _dsr = retrieve(clock, mixpanel, make_request, staff_actor, {"events.json": b"[]"})
    for name in ("index.html", "README.txt"):
        text = " ".join(files[name].decode().split())
        assert "right to lodge a complaint with a data protection supervisory authority" in text, name


def test_a_result_that_is_not_json_still_gets_an_overview(clock, mixpanel, make_request, staff_actor, project):
    files, _dsr = retrieve(clock, mixpanel, make_request, staff_actor, {"notes.txt": b"plain text"})
    assert "main-app/notes.txt" in files["index.html"].decode()
    assert "not JSON" in files["readable/main-app--notes-1.html"].decode()


def test_a_request_across_two_projects_gets_one_overview_of_both(clock, mixpanel, make_request, staff_actor, project):
    from datetime import date

    from gdpr_requests.models import MixpanelProject

    other = MixpanelProject.objects.create(
        name="Web shop",
        mixpanel_project_id="2",
        project_token="tok2",
        oauth_token="oauth2",
        token_expires_on=date(2027, 1, 1),
        base_url_override=project.base_url_override,
    )
    mixpanel.statuses["task-0002"] = ["PENDING", "SUCCESS"]
    mixpanel.result_body = make_zip({"events.json": json.dumps(EVENTS).encode()})
    dsr = approve(make_request, staff_actor, kind="access", projects=[project, other])
    drive(clock)
    files = archive_of(dsr)
    index = files["index.html"].decode()
    assert "<li>Main app</li><li>Web shop</li>" in index
    assert "main-app/events.json" in index and "web-shop/events.json" in index
    assert {"readable/main-app--events-1.html", "readable/web-shop--events-1.html"} <= set(files)
    assert sum(name == "index.html" for name in files) == 1
