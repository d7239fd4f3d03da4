"""A FAILURE in a deletion batch is split GDPR_FAILURE_SPLIT_WAYS ways: the innocent ids complete one round after
the failure, and the bad one is alone after log_k(n) splits instead of log_2(n)."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import math

import pytest

from gdpr_requests.models import AuditEvent, MixpanelTask, TaskState
from gdpr_requests.pipeline.outcomes import split_parts
from gdpr_requests.requests import states
from tests.unit.pipeline.pipeline_support import (  # noqa: F401
    approve,
    clock,
    drive,
    mixpanel,
    pipeline_settings,
    statuses,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("pipeline_settings")]


def splits_to_isolate(n: int, ways: int) -> int:
    """Rounds of FAILURE and split until one bad id among ``n`` fails alone (the bad part is the biggest)."""
    rounds = 0
    while n > 1:
        n = max(len(part) for part in split_parts([str(i) for i in range(n)], ways))
        rounds += 1
    return rounds


def test_split_parts_keeps_order_and_makes_at_most_k_nonempty_parts():
    ids = [str(n) for n in range(19)]
    parts = split_parts(ids, 8)
    assert [value for part in parts for value in part] == ids
    assert len(parts) <= 8 and all(parts)
    assert splits_to_isolate(1000, 2) == 10 and splits_to_isolate(1000, 8) == 4
    assert splits_to_isolate(64, 8) == 2 == math.ceil(math.log(64, 8))


def test_one_bad_id_in_64_holds_back_only_its_eighth_for_one_round(
    clock, mixpanel, make_request, staff_actor, project, settings
):
    assert settings.GDPR_FAILURE_SPLIT_WAYS == 8  # the shipped default
    made = [approve(make_request, staff_actor, distinct_ids=[f"id-{n:02d}"]) for n in range(64)]
    mixpanel.bad_ids = {"id-37"}
    root_failed = lambda: MixpanelTask.objects.filter(parent__isnull=True, state=TaskState.SUPERSEDED).exists()  # noqa: E731
    drive(clock, until=root_failed)
    root = MixpanelTask.objects.get(parent__isnull=True)
    children = list(root.children.order_by("pk"))
    assert [len(c.distinct_ids) for c in children] == [8] * 8

    # One round later (each child submitted and polled once), the seven innocent eighths are done.
    innocent = [c for c in children if "id-37" not in c.distinct_ids]
    drive(clock, until=lambda: all(MixpanelTask.objects.get(pk=c.pk).state == TaskState.SUCCEEDED for c in innocent))
    done = [r for r in made if statuses(r)[0] == states.COMPLETED]
    assert len(done) == 56
    bad_child = next(c for c in children if "id-37" in c.distinct_ids)
    assert MixpanelTask.objects.get(pk=bad_child.pk).state in (TaskState.SUBMITTED, TaskState.SUPERSEDED)

    drive(clock)
    failed = MixpanelTask.objects.get(state=TaskState.FAILED)
    assert failed.distinct_ids == ["id-37"]
    assert failed.parent.parent == root  # isolated after two splits; halving would take six
    assert AuditEvent.objects.filter(action="task.split").count() == 2
    assert sum(statuses(r)[0] == states.COMPLETED for r in made) == 63
