"""A person gets a copy of their data, in a real browser, from the form to the downloaded file.

Form → "check your email" → the emailed link → confirm → staff approve in the admin → the pipeline runs against
the built-in Mixpanel sandbox (served by live_server) → "Completed" on the status page → an emailed one-time
code → the file. Screenshots of every page, at desktop and phone widths, go to the test's output folder.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from urllib.parse import urlsplit

import pytest
from django.core import mail

from gdpr_requests.models import AuditEvent, DataSubjectRequest, MixpanelProject, SubjectExport
from gdpr_requests.requests import states

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
PASSWORD = "e2e-staff-password-1234"


def latest_link(kind: str) -> str:
    for message in reversed(mail.outbox):
        found = re.findall(rf"https?://\S+/{kind}/\S+/", message.body)
        if found:
            return found[0]
    raise AssertionError(f"no /{kind}/ link in {[m.subject for m in mail.outbox]}")


def watch(page, problems: list[str]) -> None:
    """Collect what a careful reviewer would flag: CSP refusals, script errors, assets that fail to load.

    (A 400 for a form sent with errors is expected and not a problem.)
    """
    page.on(
        "console",
        lambda message: (
            problems.append(message.text)
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "response",
        lambda response: (
            problems.append(f"{response.status} {response.url}")
            if response.status == 404 or response.status >= 500
            else None
        ),
    )


def local(url: str, live_url: str) -> str:
    return live_url + urlsplit(url).path


@pytest.fixture
def sandbox_project(live_server, settings):
    settings.MIXPANEL_SANDBOX_STEP_SECONDS = 0.2
    settings.MIXPANEL_SANDBOX_RATE_LIMIT = False
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 0
    settings.GDPR_POLL_INITIAL_SECONDS = 0.3
    settings.GDPR_POLL_MAX_SECONDS = 1
    settings.SITE_URL = live_server.url
    return MixpanelProject.objects.create(
        name="Product analytics",
        mixpanel_project_id="4242",
        project_token="e2e-project-token",
        oauth_token="e2e-oauth-token",
        token_expires_on="2030-01-01",
        base_url_override=f"{live_server.url}/sandbox/mixpanel/api/app",
    )


def test_a_person_gets_a_copy_of_their_data_from_form_to_file(
    page, browser, live_server, sandbox_project, worker, shots, django_user_model
):
    problems: list[str] = []
    watch(page, problems)
    page.set_viewport_size({"width": 1280, "height": 900})
    base = live_server.url

    # The start page explains the rights and leads to the form.
    page.goto(base + "/")
    assert page.get_by_role("heading", level=1).inner_text() == "See or delete the data we hold about you"
    shots(page, "home")
    page.get_by_role("link", name="Start a request").click()
    page.wait_for_url(base + "/request/")
    shots(page, "form")

    # Sending it empty names every missing field, and focus lands on the summary.
    page.get_by_role("button", name="Send request").click()
    page.wait_for_load_state()
    summary = page.locator("[data-error-summary]")
    assert summary.is_visible()
    assert page.evaluate("document.activeElement.hasAttribute('data-error-summary')")
    for message in ("Enter your name.", "Enter your email address.", "Choose where you live."):
        assert message in summary.inner_text()
    assert page.get_by_label("Your full name").get_attribute("aria-invalid") == "true"
    shots(page, "form-errors")

    # Filled in with the keyboard-reachable controls, as a person would.
    page.get_by_label("Get a copy of my data").check()
    page.get_by_label("Your full name").fill("Ana Núñez")
    page.get_by_label("Your email address").fill("ana.e2e@example.org")
    page.get_by_label("The European Union, the EEA or the United Kingdom").check()
    assert page.locator("[data-disclosure]").is_hidden()  # the CCPA question does not apply
    page.get_by_label("Your user id (optional)").fill("e2e-user-1")
    page.get_by_role("button", name="Send request").click()
    page.wait_for_url(base + "/request/sent/")
    assert page.get_by_role("heading", level=1).inner_text() == "Check your email"
    shots(page, "check-email")

    # The emailed link opens a confirm page; the click confirms.
    worker.run_due()
    dsr = DataSubjectRequest.objects.get()
    assert dsr.status == states.UNVERIFIED
    page.goto(local(latest_link("verify"), base))
    assert page.get_by_role("button", name="Confirm my request").is_visible()
    shots(page, "confirm")
    dsr.refresh_from_db()
    assert dsr.status == states.UNVERIFIED  # opening the link changed nothing
    page.get_by_role("button", name="Confirm my request").click()
    page.wait_for_url(re.compile(r".*/status/.*\?confirmed=1$"))
    status_url = page.url.split("?")[0]
    assert "your email address is confirmed" in page.content()
    shots(page, "status-confirmed")
    dsr.refresh_from_db()
    assert dsr.status == states.VERIFIED

    # Staff approve it in the admin.
    django_user_model.objects.create_superuser("e2e-admin", "admin@staff.example", PASSWORD)
    staff = browser.new_page(viewport={"width": 1280, "height": 900})
    staff.goto(f"{base}/admin/login/?next=/admin/gdpr_requests/datasubjectrequest/{dsr.pk}/change/")
    staff.fill("#id_username", "e2e-admin")
    staff.fill("#id_password", PASSWORD)
    staff.get_by_role("button", name="Log in").click()
    staff.wait_for_url(re.compile(rf".*/datasubjectrequest/{dsr.pk}/change/$"))
    staff.locator("nav.dsr-actions").get_by_role("link", name="Approve", exact=True).click()
    staff.wait_for_url(re.compile(r".*/act/approve/$"))
    shots(staff, "admin-approve")
    staff.locator("input[name=confirm]").check()  # the approve page asks for an explicit confirmation
    staff.locator("input[type=submit][value='Approve']").click()
    staff.wait_for_url(re.compile(rf".*/datasubjectrequest/{dsr.pk}/change/$"))
    assert f"Approved {dsr.reference}" in staff.content()
    staff.close()
    dsr.refresh_from_db()
    assert dsr.status == states.APPROVED

    # The pipeline carries it out against the sandbox: beat sweeps and worker steps, run here.
    from gdpr_requests.pipeline import tasks

    deadline = time.monotonic() + 60
    while dsr.status != states.COMPLETED and time.monotonic() < deadline:
        worker.run_due()
        tasks.plan_approved_requests()
        tasks.dispatch_due_tasks()
        worker.run_due()
        time.sleep(0.2)
        dsr.refresh_from_db()
    assert dsr.status == states.COMPLETED, dsr.status
    worker.run_due()  # the completion email

    page.goto(status_url)
    assert page.get_by_role("heading", level=1).inner_text().startswith("Completed")
    assert page.get_by_text("Your data is ready").is_visible()
    shots(page, "status-completed")

    # The completion email's link, an emailed code, and the file.
    page.goto(local(latest_link("download"), base))
    assert "A ZIP file of JSON files" in page.content()
    page.get_by_text("What is in the file and how do I open it?").click()
    shots(page, "download")
    page.get_by_role("button", name="Email me a code").click()
    page.wait_for_url(re.compile(r".*\?sent=1#code$"))
    worker.run_due()
    (code,) = re.findall(r"^\s+(\d{6})$", mail.outbox[-1].body, flags=re.M)
    page.get_by_label("Download code").fill("000000" if code != "000000" else "111111")
    page.get_by_role("button", name="Download my data").click()
    page.wait_for_load_state()
    assert "That code is not right" in page.locator("[data-error-summary]").inner_text()
    shots(page, "download-wrong-code")
    page.get_by_label("Download code").fill(code)
    shots(page, "download-code-entered")
    with page.expect_download() as caught:
        page.get_by_role("button", name="Download my data").click()
    download = caught.value
    # The page moves on: it says the download started and until when the file stays, and no old error stays.
    page.wait_for_url(re.compile(r".*/started/\?ticket="))
    assert page.get_by_role("heading", level=1).inner_text() == "Your download has started"
    assert "stays available until" in page.content() and page.locator("[data-error-summary]").count() == 0
    shots(page, "download-started")
    assert download.suggested_filename == f"{dsr.reference}-your-data.zip"
    saved = shots.folder / download.suggested_filename
    download.save_as(saved)
    with zipfile.ZipFile(io.BytesIO(saved.read_bytes())) as archive:
        names = archive.namelist()
        assert "index.html" in names and "README.txt" in names
        data = [name for name in names if not name.endswith("/") and "/" in name and not name.startswith("readable/")]
        assert data and all(name.endswith(".json") for name in data)
        index = archive.read("index.html").decode()
        assert "<script" not in index.lower()
    # The readable overview opens offline, straight from the unpacked ZIP.
    unpacked = shots.folder / "unpacked"
    with zipfile.ZipFile(saved) as archive:
        archive.extractall(unpacked)
    reader = browser.new_page()
    reader.goto((unpacked / "index.html").as_uri())
    assert reader.get_by_role("heading", level=1).inner_text().startswith("Your data held by")
    shots(reader, "export-index")
    reader.get_by_role("link", name="Read").first.click()
    assert reader.locator("table, dl, pre").count() >= 1
    shots(reader, "export-page")
    reader.close()
    export = SubjectExport.objects.get(request=dsr)
    assert export.download_count == 1
    assert AuditEvent.objects.filter(request_reference=dsr.reference, action="export.downloaded").count() == 1

    # The same pages at phone width.
    phone = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    watch(phone, problems)
    for name, url in (
        ("phone-home", base + "/"),
        ("phone-form", base + "/request/"),
        ("phone-status", status_url),
        ("phone-download", local(latest_link("download"), base)),
    ):
        phone.goto(url)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name} scrolls sideways ({width}px)"
        shots(phone, name)
    phone.close()

    # No CSP violation, script error or missing asset on any page.
    assert problems == []
