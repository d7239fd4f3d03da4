from __future__ import annotations

from datetime import date

import pytest

from gdpr_requests.requests import states


@pytest.mark.parametrize("action", sorted(states.TRANSITIONS))
@pytest.mark.parametrize("current", sorted(states.ALL_STATES))
def test_every_state_and_action_pair_is_allowed_or_refused_by_the_table(action, current):
    transition = states.TRANSITIONS[action]
    if current in transition.sources:
        assert states.check(action, current) is transition
    else:
        with pytest.raises(states.TransitionNotAllowed) as info:
            states.check(action, current, reference="DSR-AAAA-BBBB")
        assert current in str(info.value)
        assert "DSR-AAAA-BBBB" in str(info.value)


def test_final_states_allow_no_action():
    for final in states.FINAL_STATES:
        assert states.allowed_actions(final) == []


def test_failed_is_not_final_and_waits_for_staff():
    assert "retry" in states.allowed_actions(states.FAILED)
    assert states.FAILED not in states.FINAL_STATES


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (date(2026, 1, 15), date(2026, 2, 15)),
        (date(2026, 1, 31), date(2026, 2, 28)),
        (date(2028, 1, 31), date(2028, 2, 29)),  # leap year
        (date(2026, 3, 31), date(2026, 4, 30)),
        (date(2026, 12, 31), date(2027, 1, 31)),
        (date(2026, 8, 31), date(2026, 9, 30)),
    ],
)
def test_gdpr_deadline_is_one_calendar_month_clamped_to_month_end(received, due):
    assert states.due_date("gdpr", received) == due


@pytest.mark.parametrize(
    ("received", "extended"),
    [
        (date(2026, 1, 15), date(2026, 4, 15)),
        (date(2026, 11, 30), date(2027, 2, 28)),
        (date(2027, 11, 30), date(2028, 2, 29)),
        (date(2026, 1, 31), date(2026, 4, 30)),
    ],
)
def test_gdpr_extension_adds_two_further_months(received, extended):
    assert states.extended_due_date("gdpr", received) == extended


@pytest.mark.parametrize(
    ("received", "due", "extended"),
    [
        (date(2026, 1, 1), date(2026, 2, 15), date(2026, 4, 1)),
        (date(2028, 2, 1), date(2028, 3, 17), date(2028, 5, 1)),  # 29 Feb counts
        (date(2026, 12, 20), date(2027, 2, 3), date(2027, 3, 20)),
    ],
)
def test_ccpa_deadline_is_45_days_extendable_by_45(received, due, extended):
    assert states.due_date("ccpa", received) == due
    assert states.extended_due_date("ccpa", received) == extended
