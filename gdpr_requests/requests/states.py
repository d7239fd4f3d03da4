"""The request state machine as a table, and the deadline rules per law. No ORM here.

Every transition is named by an action; ``TRANSITIONS[action]`` says from which states it may run and where it
goes. ``resume`` goes back to the state the request was in before ``hold``.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

UNVERIFIED = "unverified"
VERIFIED = "verified"
APPROVED = "approved"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
REJECTED = "rejected"
CANCELLED = "cancelled"
EXPIRED = "expired"
ON_HOLD = "on_hold"

STATUS_CHOICES = [
    (UNVERIFIED, "Unverified"),
    (VERIFIED, "Verified"),
    (APPROVED, "Approved"),
    (PROCESSING, "Processing"),
    (COMPLETED, "Completed"),
    (FAILED, "Failed"),
    (REJECTED, "Rejected"),
    (CANCELLED, "Cancelled"),
    (EXPIRED, "Expired"),
    (ON_HOLD, "On hold"),
]
ALL_STATES = frozenset(value for value, _ in STATUS_CHOICES)
FINAL_STATES = frozenset({COMPLETED, REJECTED, CANCELLED, EXPIRED})
OPEN_STATES = ALL_STATES - FINAL_STATES

# Sentinel target: back to the state held in DataSubjectRequest.status_before_hold.
PREVIOUS = "<previous>"


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[str]
    target: str
    label: str


def _t(action: str, sources: set[str] | frozenset[str], target: str, label: str) -> Transition:
    return Transition(action, frozenset(sources), target, label)


TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in [
        _t("verify", {UNVERIFIED}, VERIFIED, "confirm the requester's identity"),
        _t("approve", {VERIFIED}, APPROVED, "approve"),
        _t("reject", {UNVERIFIED, VERIFIED, FAILED, ON_HOLD}, REJECTED, "reject"),
        _t("start_processing", {APPROVED}, PROCESSING, "start processing"),
        _t("complete", {PROCESSING}, COMPLETED, "complete"),
        _t("fail", {PROCESSING}, FAILED, "mark as failed"),
        _t("retry", {FAILED}, APPROVED, "retry"),
        _t("hold", OPEN_STATES - {ON_HOLD}, ON_HOLD, "put on hold"),
        _t("resume", {ON_HOLD}, PREVIOUS, "resume"),
        _t("cancel", OPEN_STATES, CANCELLED, "cancel"),
        _t("expire", {UNVERIFIED}, EXPIRED, "expire"),
    ]
}


class TransitionNotAllowed(Exception):
    """A transition that the table refuses from the request's current state."""

    def __init__(self, *, action: str, current: str, reference: str = "") -> None:
        self.action = action
        self.current = current
        self.reference = reference
        allowed = ", ".join(sorted(TRANSITIONS[action].sources)) if action in TRANSITIONS else "nowhere"
        who = f"Request {reference}" if reference else "The request"
        super().__init__(
            f"{who} is {current}: cannot {TRANSITIONS[action].label if action in TRANSITIONS else action} (allowed from: {allowed})."
        )


def check(action: str, current: str, *, reference: str = "") -> Transition:
    """Return the transition for ``action`` from ``current``, or raise TransitionNotAllowed."""
    transition = TRANSITIONS.get(action)
    if transition is None or current not in transition.sources:
        raise TransitionNotAllowed(action=action, current=current, reference=reference)
    return transition


def allowed_actions(current: str) -> list[str]:
    return [action for action, t in TRANSITIONS.items() if current in t.sources]


# --- Deadlines ----------------------------------------------------------------------------------------
GDPR = "gdpr"
CCPA = "ccpa"


def add_months(day: date, months: int) -> date:
    """Same day ``months`` later; where that day does not exist, the last day of that month."""
    month_index = day.month - 1 + months
    year = day.year + month_index // 12
    month = month_index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(day.day, last))


@dataclass(frozen=True)
class DeadlineRule:
    regulation: str
    description: str
    extension_description: str

    def due(self, received: date) -> date:
        raise NotImplementedError

    def extended(self, received: date) -> date:
        raise NotImplementedError


class _GdprRule(DeadlineRule):
    # Art. 12(3): one month from receipt, extendable by two further months.
    def due(self, received: date) -> date:
        return add_months(received, 1)

    def extended(self, received: date) -> date:
        return add_months(received, 3)


class _CcpaRule(DeadlineRule):
    # Cal. Civ. Code 1798.130: 45 days, extendable once by 45 days with notice.
    def due(self, received: date) -> date:
        return received + timedelta(days=45)

    def extended(self, received: date) -> date:
        return received + timedelta(days=90)


DEADLINE_RULES: dict[str, DeadlineRule] = {
    GDPR: _GdprRule(GDPR, "one calendar month from receipt", "two further months"),
    CCPA: _CcpaRule(CCPA, "45 days from receipt", "45 further days"),
}


def due_date(regulation: str, received: date) -> date:
    return DEADLINE_RULES[regulation].due(received)


def extended_due_date(regulation: str, received: date) -> date:
    """The due date after the one extension each law allows."""
    return DEADLINE_RULES[regulation].extended(received)
