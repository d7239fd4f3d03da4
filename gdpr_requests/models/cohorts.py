"""Cohort intakes: Mixpanel cohort syncs taken in as requests (docs/cohorts.md).

An intake is one webhook destination in Mixpanel; a sync row logs one message (a page) with counts only; a member
row ties a request to the intake that created it under a keyed hash of the member's distinct id, which is how a
repeated member is recognised without scanning the requests' JSON.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from gdpr_requests.models.projects import MixpanelProject
from gdpr_requests.models.requests import DataSubjectRequest, Regulation, RequestKind


class CohortIdentity(models.TextChoices):
    # Only the product's own login can put a user in the cohort: the request starts verified.
    PRODUCT_LOGIN = "product-login", "Signed-in user of the product"
    # The subject confirms by email, as on the web form.
    EMAIL = "email", "Email confirmation"


class CohortAction(models.TextChoices):
    MEMBERS = "members", "Full cohort"
    ADD_MEMBERS = "add_members", "Members added"
    REMOVE_MEMBERS = "remove_members", "Members removed"


class CohortIntake(models.Model):
    name = models.CharField(max_length=100, unique=True)
    project = models.ForeignKey(MixpanelProject, on_delete=models.PROTECT, related_name="cohort_intakes")
    kind = models.CharField(max_length=10, choices=RequestKind.choices)
    regulation = models.CharField(max_length=4, choices=Regulation.choices)
    identity = models.CharField(max_length=16, choices=CohortIdentity.choices, default=CohortIdentity.PRODUCT_LOGIN)
    auto_approve = models.BooleanField(default=False, help_text="Approve verified requests without staff.")
    # The unguessable part of the webhook URL.
    public_id = models.CharField(max_length=64, unique=True, editable=False)
    username = models.CharField(max_length=64, editable=False)
    password_hash = models.CharField(max_length=256, editable=False)
    # After a rotation the old password works until previous_valid_until, so Mixpanel's side can be updated.
    previous_password_hash = models.CharField(max_length=256, blank=True, editable=False)
    previous_valid_until = models.DateTimeField(null=True, blank=True, editable=False)
    password_changed_at = models.DateTimeField(default=timezone.now, editable=False)
    is_active = models.BooleanField(default=True)
    # Failed authentications: counted, never what was sent.
    auth_failure_count = models.PositiveIntegerField(default=0, editable=False)
    last_auth_failure_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_sync_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CohortSync(models.Model):
    """One message from Mixpanel (one page of one export), with counts and no member data."""

    intake = models.ForeignKey(CohortIntake, on_delete=models.CASCADE, related_name="syncs")
    received_at = models.DateTimeField(default=timezone.now)
    action = models.CharField(max_length=16, choices=CohortAction.choices)
    mixpanel_cohort_id = models.CharField(max_length=64, blank=True)
    session_id = models.CharField(max_length=200)
    page_count = models.PositiveIntegerField()
    total_pages = models.PositiveIntegerField(null=True, blank=True)
    members_received = models.PositiveIntegerField(default=0)
    requests_created = models.PositiveIntegerField(default=0)
    duplicates_skipped = models.PositiveIntegerField(default=0)
    # Members that could not be taken (identity "email" and no usable address).
    refused = models.PositiveIntegerField(default=0)
    # The same page delivered again (Mixpanel retries; duplicates are documented): answered, nothing created.
    redeliveries = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["intake", "session_id", "action", "page_count"], name="cohort_sync_one_per_page"
            )
        ]

    def __str__(self) -> str:
        return f"{self.action} page {self.page_count} of {self.session_id[:12]}"


class CohortMember(models.Model):
    """The request an intake made for one member, found again by ``member_key`` (a keyed hash of the id)."""

    intake = models.ForeignKey(CohortIntake, on_delete=models.CASCADE, related_name="members")
    sync = models.ForeignKey(CohortSync, on_delete=models.CASCADE, related_name="members")
    member_key = models.CharField(max_length=64)
    request = models.OneToOneField(DataSubjectRequest, on_delete=models.CASCADE, related_name="cohort_member")

    class Meta:
        indexes = [models.Index(fields=["intake", "member_key"])]

    def __str__(self) -> str:
        return f"member of {self.intake_id}"
