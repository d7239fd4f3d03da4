"""The auditor area's pages: who gets in, what each view records, and that the page and the PDF agree."""

from __future__ import annotations

import io
import json
import re
from datetime import date
from html import unescape

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from pypdf import PdfReader

from gdpr_requests.audit import chain as audit
from gdpr_requests.models import AuditEvent, DataSubjectRequest
from tests.unit.reports import test_reports_pdf, test_reports_summary

pytestmark = pytest.mark.django_db

# The data sets (fixtures) shared with the summary and PDF tests.
dataset = test_reports_summary.dataset
evidence_request = test_reports_pdf.evidence_request

SUMMARY_QUERY = {"start": "2025-01-06", "end": "2025-01-26", "granularity": "week"}


def _pages(reference: str) -> list[str]:
    return [
        reverse("reports:index"),
        reverse("reports:audit_trail"),
        reverse("reports:audit_trail") + "?format=csv",
        reverse("reports:summary"),
        reverse("reports:summary_pdf"),
        reverse("reports:evidence_lookup"),
        reverse("reports:evidence", args=[reference]),
        reverse("reports:evidence_pdf", args=[reference]),
        reverse("reports:evidence_json", args=[reference]),
    ]


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.org", "correct-horse-battery", is_staff=True)


def _consume(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.parametrize("who", ["auditor_user", "staff_user", "superuser"])
def test_auditors_staff_and_superusers_get_every_report(client, request, who, make_request, django_user_model):
    if who == "superuser":
        user = django_user_model.objects.create_superuser("root", "root@example.org", "correct-horse-battery")
    else:
        user = request.getfixturevalue(who)
    reference = make_request().reference
    client.force_login(user)
    for url in _pages(reference):
        response = client.get(url)
        assert response.status_code == 200, url
        _consume(response)


def test_other_users_get_403_and_see_nothing(client, plain_user, make_request):
    reference = make_request().reference
    client.force_login(plain_user)
    before = AuditEvent.objects.count()
    for url in _pages(reference):
        response = client.get(url)
        assert response.status_code == 403, url
        assert reference not in response.content.decode()
    assert AuditEvent.objects.count() == before  # a refused visit produces no report, so no report event


def test_anonymous_visitors_go_to_the_admin_login(client, make_request):
    reference = make_request().reference
    for url in _pages(reference):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/?next=/reports/"), response["Location"]


def test_report_pages_refuse_other_methods(client, auditor_user):
    client.force_login(auditor_user)
    assert client.post(reverse("reports:summary"), SUMMARY_QUERY).status_code == 405


def test_viewing_and_downloading_the_summary_are_audit_events(client, auditor_user, dataset):
    client.force_login(auditor_user)
    client.get(reverse("reports:summary"), SUMMARY_QUERY)
    client.get(reverse("reports:summary_pdf"), SUMMARY_QUERY)
    events = list(AuditEvent.objects.filter(action__startswith="report.").order_by("sequence"))
    assert [(e.action, e.payload["format"]) for e in events] == [
        ("report.viewed", "html"),
        ("report.downloaded", "pdf"),
    ]
    for event in events:
        assert (event.actor_type, event.actor_label) == ("auditor", "aud")
        assert event.payload["report"] == "compliance_summary"
        assert (event.payload["period_start"], event.payload["period_end"]) == ("2025-01-06", "2025-01-26")
    assert audit.verify_database().ok


def test_the_page_and_the_pdf_show_the_same_numbers(client, auditor_user, dataset):
    client.force_login(auditor_user)
    page = client.get(reverse("reports:summary"), SUMMARY_QUERY).content.decode()
    figures = dict(
        zip(
            [unescape(x) for x in re.findall(r"<dt>(.*?)</dt>", page.split('class="figures"')[1].split("</dl>")[0])],
            [unescape(x) for x in re.findall(r"<dd>(.*?)</dd>", page.split('class="figures"')[1].split("</dl>")[0])],
            strict=True,
        )
    )
    assert figures["On time"] == "85.7% (6 of 7)"
    assert (figures["Median days to close"], figures["90th percentile days"]) == ("12.0", "53.6")
    content = client.get(reverse("reports:summary_pdf"), SUMMARY_QUERY).content
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(io.BytesIO(content)).pages)
    for label, value in figures.items():
        assert f"{value} {label}" in text, (label, value)
    for row_reference in (dataset["R7"].reference, dataset["R8"].reference):
        assert row_reference in page and row_reference in text


def test_the_summary_page_uses_no_inline_style_or_script_and_draws_charts_as_svg(client, auditor_user, dataset):
    client.force_login(auditor_user)
    response = client.get(reverse("reports:summary"), SUMMARY_QUERY)
    html = response.content.decode()
    assert "style=" not in html and "<style" not in html
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None  # no inline script (the CSP allows files only)
    assert html.count('src="data:image/svg+xml;base64,') == 3
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["Cache-Control"] == "no-store, private"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2025-02-01", "end": "2025-01-01", "granularity": "week"}, "ends before it starts"),
        ({"start": "yesterday", "end": "2025-01-01", "granularity": "week"}, "Enter a valid date"),
        ({"start": "2025-01-01", "end": "2025-02-01", "granularity": "year"}, "Select a valid choice"),
    ],
)
def test_a_bad_period_gets_a_clear_message_not_an_error(client, auditor_user, query, message):
    client.force_login(auditor_user)
    for name in ("reports:summary", "reports:summary_pdf"):
        response = client.get(reverse(name), query)
        assert response.status_code == 400
        assert message in response.content.decode()
    assert not AuditEvent.objects.filter(action__startswith="report.").exists()


def test_the_evidence_json_twin_holds_verifiable_events_and_the_chain_head(client, auditor_user, evidence_request):
    dsr, export = evidence_request
    client.force_login(auditor_user)
    response = client.get(reverse("reports:evidence_json", args=[dsr.reference.lower()]))
    assert response["Content-Disposition"] == f'attachment; filename="evidence-{dsr.reference}.json"'
    pack = json.loads(response.content)
    assert pack["request"]["reference"] == dsr.reference
    assert pack["export"]["sha256"] == export.sha256
    assert pack["tasks"][0]["tracking_id"] == "trk-123456789"
    assert [h["status"] for h in pack["tasks"][0]["status_history"]] == ["PENDING", "STARTED", "SUCCESS"]
    assert pack["tasks"][0]["requesting_user"] == "gdpr-owner@company.example"
    # The access itself is the newest event of the request and the chain head the pack names.
    last = pack["timeline"][-1]
    assert (last["action"], last["payload"]["report"], last["payload"]["format"]) == (
        "report.downloaded",
        "evidence_pack",
        "json",
    )
    assert (pack["chain"]["head_sequence"], pack["chain"]["head_hash"]) == (last["sequence"], last["hash"])
    for record in pack["timeline"]:
        assert audit.compute_hash(record["prev_hash"], record) == record["hash"]
    assert pack["chain"]["request_events_verified"] is True
    raw = response.content.decode()
    for secret in ("zoe@example.org", "Zoë", "secret-distinct-id-1", "passport"):
        assert secret not in raw


def test_the_evidence_pack_pdf_and_page_are_audited_against_the_request(client, auditor_user, evidence_request):
    dsr, _export = evidence_request
    client.force_login(auditor_user)
    assert client.get(reverse("reports:evidence", args=[dsr.reference])).status_code == 200
    response = client.get(reverse("reports:evidence_pdf", args=[dsr.reference]))
    assert response["Content-Type"] == "application/pdf"
    assert PdfReader(io.BytesIO(response.content)).pages
    formats = list(
        AuditEvent.objects.filter(request_reference=dsr.reference, action__startswith="report.").values_list(
            "payload__format", flat=True
        )
    )
    assert formats == ["html", "pdf"]


def test_an_unknown_or_malformed_reference_gets_a_clear_404_page(client, auditor_user):
    client.force_login(auditor_user)
    response = client.get(reverse("reports:evidence_pdf", args=["DSR-0000-0000"]))
    assert response.status_code == 404
    assert "No request has the reference DSR-0000-0000." in response.content.decode()
    response = client.get(reverse("reports:evidence", args=["<script>"]))
    assert response.status_code == 404
    assert "<script>" not in response.content.decode()
    lookup = client.get(reverse("reports:evidence_lookup"), {"reference": "nonsense"})
    assert lookup.status_code == 400 and "looks like DSR-" in lookup.content.decode()
    found = client.get(reverse("reports:evidence_lookup"), {"reference": " dsr-0000-0000 "})
    assert found["Location"] == reverse("reports:evidence", args=["DSR-0000-0000"])
    assert not AuditEvent.objects.filter(action__startswith="report.").exists()


def test_auditors_cannot_change_anything_in_the_admin(client, auditor_user, make_request, project):
    from django.contrib import admin

    dsr = make_request()
    client.force_login(auditor_user)
    registered = {
        model._meta.model_name: model for model in admin.site._registry if model._meta.app_label == "gdpr_requests"
    }
    assert "datasubjectrequest" in registered, "the staff admin registers requests"
    objects = {"datasubjectrequest": dsr, "mixpanelproject": project, "auditevent": AuditEvent.objects.first()}
    for name, obj in objects.items():
        if name not in registered:
            continue
        change = reverse(f"admin:gdpr_requests_{name}_change", args=[obj.pk])
        assert client.get(change).status_code == 200  # they may look
        assert client.post(change, {"status": "completed", "name": "x", "action": "x"}).status_code == 403
        add = reverse(f"admin:gdpr_requests_{name}_add")
        assert client.post(add, {}).status_code == 403
    dsr.refresh_from_db()
    assert dsr.status == "unverified"
    project.refresh_from_db()
    assert project.name == "Main app"
    # Nor through the request services' admin actions.
    changelist = reverse("admin:gdpr_requests_datasubjectrequest_changelist")
    response = client.post(changelist, {"action": "approve", "_selected_action": [dsr.pk]})
    assert response.status_code in (200, 302, 403)
    assert DataSubjectRequest.objects.get(pk=dsr.pk).status == "unverified"


def test_membership_is_checked_on_each_request(client, auditor_user):
    client.force_login(auditor_user)
    assert client.get(reverse("reports:index")).status_code == 200
    auditor_user.groups.remove(Group.objects.get(name="Auditors"))
    assert client.get(reverse("reports:index")).status_code == 403


@pytest.mark.parametrize(
    ("today", "quarter_start"),
    [
        (date(2026, 12, 2), date(2026, 10, 1)),
        (date(2026, 1, 1), date(2026, 1, 1)),
        (date(2026, 6, 30), date(2026, 4, 1)),
    ],
)
def test_the_default_period_is_the_current_quarter_so_far(today, quarter_start):
    from gdpr_requests.reports.summary import default_period

    assert default_period(today) == (quarter_start, today)


@pytest.mark.parametrize("url", ["/reports/summary/", "/reports/summary/?granularity=week"])
def test_the_summary_form_opens_with_the_current_quarter_filled_in(client, auditor_user, url):
    from django.utils import timezone

    client.force_login(auditor_user)
    html = client.get(url).content.decode()
    today = timezone.localdate()
    start = today.replace(month=(today.month - 1) // 3 * 3 + 1, day=1)
    # <input type="date"> shows nothing unless the value is YYYY-MM-DD.
    assert f'type="date" name="start" value="{start:%Y-%m-%d}"' in html
    assert f'type="date" name="end" value="{today:%Y-%m-%d}"' in html
