"""Rejections carry a ground in the law's words, and the subject's email states it with the rights of the
request's own regulation (a CCPA rejection never speaks of a data protection authority)."""

# ruff: noqa: F811  (pytest fixtures imported from admin_support are redefined as arguments)

from __future__ import annotations

import pytest

from gdpr_requests.models import AuditEvent, RequestRejection
from gdpr_requests.notifications.rendering import build_message
from gdpr_requests.requests import services
from gdpr_requests.requests.services import ServiceError
from tests.unit.management.cli_support import run_json
from tests.unit.staff.admin_support import action_url, staff_client, verified_request  # noqa: F401

pytestmark = pytest.mark.django_db


def test_a_ccpa_rejection_names_the_attorney_general_not_a_dpa(make_request, staff_actor):
    dsr = make_request(regulation="ccpa", verified_by_staff="id card", channel="staff")
    services.request_reject(request=dsr, reason="", ground="identity_not_verified", actor=staff_actor)
    message = build_message(dsr, "reject")
    text = message.body
    assert "We could not verify your identity" in text
    assert "California Attorney General" in text and "California Privacy Protection Agency" in text
    assert "data protection" not in text.lower()
    assert "California Attorney General" in message.alternatives[0][0]


def test_a_gdpr_rejection_names_the_supervisory_authority_and_judicial_remedy(make_request, staff_actor):
    dsr = make_request(verified_by_staff="id card", channel="staff")
    services.request_reject(
        request=dsr, reason="We must keep invoices for 10 years.", ground="legal_obligation", actor=staff_actor
    )
    text = build_message(dsr, "reject").body
    assert "We must keep the data to comply with a legal obligation" in text
    assert "We must keep invoices for 10 years." in text
    assert "supervisory authority" in text and "judicial remedy" in text
    assert "Attorney General" not in text


def test_the_ground_is_recorded_and_audited_without_the_text(verified_request, staff_actor):
    services.request_reject(
        request=verified_request, reason="secret details", ground="manifestly_unfounded", actor=staff_actor
    )
    assert RequestRejection.objects.get(request=verified_request).ground == "manifestly_unfounded"
    event = AuditEvent.objects.get(action="request.reject")
    assert event.payload["ground"] == "manifestly_unfounded" and "secret details" not in str(event.payload)


def test_other_needs_free_text_and_unknown_grounds_are_refused(verified_request, staff_actor):
    with pytest.raises(ServiceError, match="A reason is required"):
        services.request_reject(request=verified_request, reason=" ", ground="other", actor=staff_actor)
    with pytest.raises(ServiceError, match="Unknown rejection ground"):
        services.request_reject(request=verified_request, reason="x", ground="because", actor=staff_actor)


def test_the_admin_reject_page_offers_the_grounds(staff_client, verified_request):
    page = staff_client.get(action_url(verified_request, "reject")).content.decode()
    assert "We could not verify your identity" in page and "manifestly unfounded or excessive" in page
    response = staff_client.post(action_url(verified_request, "reject"), {"ground": "other", "reason": ""})
    assert response.status_code == 200 and "Explain the reason to the requester." in response.content.decode()
    staff_client.post(action_url(verified_request, "reject"), {"ground": "not_our_subject", "reason": ""})
    assert RequestRejection.objects.get(request=verified_request).ground == "not_our_subject"


def test_the_cli_takes_a_ground(verified_request):
    data = run_json(
        "dsr",
        "reject",
        verified_request.reference,
        "--ground",
        "identity_not_verified",
        "--reason",
        "no reply",
        "--json",
    )
    assert data["status"] == "rejected"
    assert RequestRejection.objects.get(request=verified_request).ground == "identity_not_verified"
