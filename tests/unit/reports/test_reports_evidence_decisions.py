"""The evidence pack says who decided and how the distinct ids were found (never the ids themselves)."""

from __future__ import annotations

import io

from django.contrib.auth.models import Group
from pypdf import PdfReader

from gdpr_requests.audit.chain import Actor
from gdpr_requests.reports import build_evidence_pack, pdf
from gdpr_requests.requests.approvals import request_approval_record


def _text(content: bytes) -> str:
    return " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages).split())


def test_a_two_approver_deletion_names_both_approvers_in_the_pack_and_its_pdf(
    make_request, staff_user, django_user_model, project
):
    project.deletion_approvals_required = 2
    project.save(update_fields=["deletion_approvals_required"])
    second = django_user_model.objects.create_user("bob", "bob@staff.example", "correct-horse-battery", is_staff=True)
    second.groups.add(Group.objects.get(name="Privacy staff"))
    dsr = make_request(verified_by_staff="passport checked", distinct_ids=["secret-id-42"], projects=[project])
    request_approval_record(request=dsr, actor=Actor.staff(staff_user))
    request_approval_record(request=dsr, actor=Actor.staff(second))

    pack = build_evidence_pack(reference=dsr.reference, generated_by="aud")
    assert pack["decisions"]["approvals_required"] == 2
    assert [a["by"] for a in pack["decisions"]["approvals"]] == ["alice", "bob"]
    assert pack["identity_lookups"] == []
    text = _text(pdf.render_evidence_pdf(pack))
    assert "Approvals required 2" in text and "alice at" in text and "bob at" in text
    assert "entered by the subject or by staff" in text
    assert "secret-id-42" not in text


def test_the_summary_counts_two_approver_deletions_and_rejections_by_ground(
    make_request, staff_user, staff_actor, django_user_model, project
):
    from django.utils import timezone

    from gdpr_requests.models import RejectionGround
    from gdpr_requests.reports import build_summary
    from gdpr_requests.requests import services

    project.deletion_approvals_required = 2
    project.save(update_fields=["deletion_approvals_required"])
    second = django_user_model.objects.create_user("bob", "bob@staff.example", "correct-horse-battery", is_staff=True)
    second.groups.add(Group.objects.get(name="Privacy staff"))
    two = make_request(verified_by_staff="seen", distinct_ids=["a"], projects=[project], email="a@example.org")
    request_approval_record(request=two, actor=Actor.staff(staff_user))
    request_approval_record(request=two, actor=Actor.staff(second))
    for email in ("b@example.org", "c@example.org"):
        refused = make_request(verified_by_staff="seen", email=email)
        services.request_reject(
            request=refused, reason="", actor=staff_actor, ground=RejectionGround.MANIFESTLY_UNFOUNDED
        )
    today = timezone.localdate()
    summary = build_summary(start=today, end=today)
    assert (summary.approved_deletions, summary.two_approver_deletions) == (1, 1)
    assert ("Deletions approved by two", "1 of 1") in summary.key_figures()
    assert summary.rejections == [
        {
            "reason": "The request is manifestly unfounded or excessive",
            "count": 2,
            "references": summary.rejections[0]["references"],
        }
    ]
