"""Sign-offs on a deletion: one row per staff member who approved exactly this set of ids in these projects."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from gdpr_requests.models.requests import DataSubjectRequest


class DeletionApproval(models.Model):
    """One staff member's approval of a request as it stood (``binding_hash``: kind, projects, distinct ids).

    The unique constraint is the database's half of the two-person rule: the same person cannot count twice for
    the same binding, whatever the service does. A change of ids or projects gives a new binding, so older rows no
    longer count (requests/approval_rules.py).
    """

    request = models.ForeignKey(DataSubjectRequest, on_delete=models.CASCADE, related_name="deletion_approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    binding_hash = models.CharField(max_length=64)
    approved_at = models.DateTimeField()

    class Meta:
        ordering = ["approved_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "approver", "binding_hash"], name="deletion_approval_once_per_approver"
            )
        ]

    def __str__(self) -> str:
        return f"approval of {self.request.reference}"


class RejectionGround(models.TextChoices):
    """Why a request is refused, in the words of the law (GDPR Art. 11(2)/12(5)/17(3); CCPA 1798.105(d),
    1798.140(ak), 1798.145(h)(3)); the subject's email states it."""

    IDENTITY_NOT_VERIFIED = "identity_not_verified", _("We could not verify your identity")
    MANIFESTLY_UNFOUNDED = "manifestly_unfounded", _("The request is manifestly unfounded or excessive")
    LEGAL_OBLIGATION = "legal_obligation", _("We must keep the data to comply with a legal obligation")
    NOT_OUR_SUBJECT = "not_our_subject", _("We hold no personal data about you")
    OTHER = "other", _("Another reason (explained below)")


class RequestRejection(models.Model):
    """The ground on which a request was rejected (its free text stays in DataSubjectRequest.rejection_reason)."""

    request = models.OneToOneField(DataSubjectRequest, on_delete=models.CASCADE, related_name="rejection")
    ground = models.CharField(max_length=24, choices=RejectionGround.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"rejection of {self.request.reference}"
