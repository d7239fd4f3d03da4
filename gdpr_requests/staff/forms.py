"""The small forms behind each staff action: each asks only for what its service needs."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from django import forms
from django.utils import timezone

from gdpr_requests.models import Channel, DisclosureType, MixpanelProject, Regulation, RejectionGround, RequestKind
from gdpr_requests.requests import selectors
from gdpr_requests.requests.services import MAX_DISTINCT_IDS

REASON_MAX = 2000
TEXTAREA = forms.Textarea(attrs={"rows": 4, "cols": 70})


class ConfirmForm(forms.Form):
    """An action that needs nothing but a deliberate click."""


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=REASON_MAX, widget=TEXTAREA)

    def __init__(self, *args: Any, label: str = "Reason", help_text: str = "", required: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["reason"].label = label
        self.fields["reason"].help_text = help_text
        self.fields["reason"].required = required


class IdentityForm(forms.Form):
    how = forms.CharField(
        label="How the requester's identity was checked",
        max_length=REASON_MAX,
        widget=TEXTAREA,
        help_text="For example: replied from the account's address; photo ID seen by video call. "
        "Do not paste documents or ID numbers here.",
    )


class DistinctIdsForm(forms.Form):
    distinct_ids = forms.CharField(
        label="Mixpanel distinct ids",
        widget=forms.Textarea(attrs={"rows": 6, "cols": 70}),
        help_text=f"One per line (at most {MAX_DISTINCT_IDS}). This replaces the current list.",
    )

    def clean_distinct_ids(self) -> list[str]:
        ids = [line.strip() for line in self.cleaned_data["distinct_ids"].splitlines() if line.strip()]
        if not ids:
            raise forms.ValidationError("Give at least one distinct id.")
        return ids


class ProjectsForm(forms.Form):
    projects = forms.ModelMultipleChoiceField(
        queryset=MixpanelProject.objects.order_by("name"),
        widget=forms.CheckboxSelectMultiple,
        help_text="The Mixpanel projects this request applies to.",
    )


class AssignForm(forms.Form):
    assignee = forms.ModelChoiceField(
        queryset=selectors.staff_assignees(), required=False, empty_label="Nobody (unassign)"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Evaluated per form, not at import: staff join and leave.
        self.fields["assignee"].queryset = selectors.staff_assignees()


class NoteForm(forms.Form):
    note = forms.CharField(
        max_length=REASON_MAX,
        widget=TEXTAREA,
        help_text="Internal: never shown to the requester. The audit trail records that a note was written, "
        "not its text.",
    )


class IntakeForm(forms.Form):
    """A request that reached staff by letter, phone or email: entered on the requester's behalf."""

    kind = forms.ChoiceField(choices=RequestKind.choices)
    regulation = forms.ChoiceField(choices=Regulation.choices)
    disclosure_type = forms.ChoiceField(
        label="CCPA disclosure type",
        choices=[("", "—"), *DisclosureType.choices],
        required=False,
        help_text="CCPA access requests only; defaults to specific pieces of data.",
    )
    email = forms.EmailField(label="Requester's email", max_length=254)
    name = forms.CharField(label="Requester's name", max_length=200, required=False)
    received_on = forms.DateField(
        label="Received on",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),  # a date input takes ISO dates only
        help_text="The deadline counts from this day.",
    )
    distinct_ids = forms.CharField(
        label="Mixpanel distinct ids",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        required=False,
        help_text="One per line; can be added later, before approval.",
    )
    projects = forms.ModelMultipleChoiceField(
        queryset=MixpanelProject.objects.filter(is_active=True).order_by("name"),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Leave all unticked for every active project.",
    )
    message = forms.CharField(label="What the requester asked", widget=TEXTAREA, required=False, max_length=5000)
    identity_verification = forms.CharField(
        label="How identity was checked",
        widget=TEXTAREA,
        required=False,
        max_length=REASON_MAX,
        help_text="Fill in when you have already checked the requester's identity: the request then starts "
        "verified. Leave blank to send the usual email confirmation.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["received_on"].initial = timezone.localdate()
        self.fields["projects"].queryset = MixpanelProject.objects.filter(is_active=True).order_by("name")

    def clean_received_on(self) -> date:
        day = self.cleaned_data["received_on"]
        if day > timezone.localdate():
            raise forms.ValidationError("The received date is in the future.")
        return day

    def clean_distinct_ids(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["distinct_ids"].splitlines() if line.strip()]

    def service_arguments(self) -> dict[str, Any]:
        """Keyword arguments for services.request_create (without the actor)."""
        data = self.cleaned_data
        day = data["received_on"]
        now = timezone.localtime()
        # Today means now; an earlier day means midday of that day, which keeps its local date in any zone.
        received_at = now if day == now.date() else timezone.make_aware(datetime.combine(day, time(12)))
        return {
            "kind": data["kind"],
            "regulation": data["regulation"],
            "disclosure_type": data["disclosure_type"],
            "email": data["email"],
            "name": data["name"],
            "received_at": received_at,
            "distinct_ids": data["distinct_ids"],
            "projects": list(data["projects"]) or None,
            "message": data["message"],
            "verified_by_staff": data["identity_verification"].strip(),
            "channel": Channel.STAFF,
        }


class ApproveConfirmForm(forms.Form):
    """The approve page's explicit confirmation: a box to tick, so that a stray click approves nothing."""

    confirm = forms.BooleanField(
        label="I have checked what these approvals will do, and I approve.",
        error_messages={"required": "Tick the box to confirm the approval."},
    )


class RejectForm(forms.Form):
    """A ground in the law's words (the subject's email states it) and free text, required for "other"."""

    ground = forms.ChoiceField(label="Ground", choices=RejectionGround.choices, widget=forms.RadioSelect)
    reason = forms.CharField(
        label="Explanation for the requester",
        max_length=REASON_MAX,
        widget=TEXTAREA,
        required=False,
        help_text="Shown to the requester: write it for them. Required for 'another reason'.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("ground") == RejectionGround.OTHER and not (cleaned.get("reason") or "").strip():
            self.add_error("reason", "Explain the reason to the requester.")
        return cleaned
