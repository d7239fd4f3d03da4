from __future__ import annotations

from datetime import date

import pytest

from gdpr_requests.requests import states

# The lifecycle, written out by hand: a row per state, a column per action, the target where the action is
# allowed and "-" where it is refused. It is deliberately NOT derived from states.TRANSITIONS, so that a change
# to the table (say, "reject" from processing, after Mixpanel was already asked to delete) fails here until
# someone decides it on purpose and edits this grid too. "prev" is resume's back-to-where-it-was target.
EXPECTED_TABLE = """
state       verify    approve   reject    start_processing complete  fail    retry     hold     resume  cancel     expire
unverified  verified  -         rejected  -                -         -       -         on_hold  -       cancelled  expired
verified    -         approved  rejected  -                -         -       -         on_hold  -       cancelled  -
approved    -         -         -         processing       -         -       -         on_hold  -       cancelled  -
processing  -         -         -         -                completed failed  -         on_hold  -       cancelled  -
on_hold     -         -         rejected  -                -         -       -         -        prev    cancelled  -
failed      -         -         rejected  -                -         -       approved  on_hold  -       cancelled  -
completed   -         -         -         -                -         -       -         -        -       -          -
rejected    -         -         -         -                -         -       -         -        -       -          -
cancelled   -         -         -         -                -         -       -         -        -       -          -
expired     -         -         -         -                -         -       -         -        -       -          -
"""


def _expected() -> dict[tuple[str, str], str | None]:
    (_, *actions), *rows = [line.split() for line in EXPECTED_TABLE.strip().splitlines()]
    table = {}
    for state, *targets in rows:
        for action, target in zip(actions, targets, strict=True):
            table[(state, action)] = {"-": None, "prev": states.PREVIOUS}.get(target, target)
    return table


EXPECTED = _expected()


def test_the_literal_table_covers_every_state_and_every_action():
    assert {state for state, _ in EXPECTED} == set(states.ALL_STATES)
    assert {action for _, action in EXPECTED} == set(states.TRANSITIONS)
    assert len(EXPECTED) == len(states.ALL_STATES) * len(states.TRANSITIONS)


@pytest.mark.parametrize(("current", "action"), sorted(EXPECTED))
def test_every_state_and_action_pair_matches_the_literal_table(current, action):
    target = EXPECTED[(current, action)]
    if target is None:
        with pytest.raises(states.TransitionNotAllowed) as info:
            states.check(action, current, reference="DSR-AAAA-BBBB")
        assert current in str(info.value)
        assert "DSR-AAAA-BBBB" in str(info.value)
    else:
        assert states.check(action, current).target == target


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
