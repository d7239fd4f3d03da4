"""A rate-limiter slot taken ``until_finished`` stays taken while its call runs, however long past the interval,
and frees one interval after the call ends: no two calls of a project reach Mixpanel less than an interval apart
even when a step's database work before sending outlasts the interval (once seen: two calls 0.93 s apart)."""

# ruff: noqa: F811  (pytest fixtures imported from pipeline_support are redefined as arguments)

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.utils import timezone

from gdpr_requests import pipeline
from gdpr_requests.mixpanel import ratelimit
from gdpr_requests.models import MixpanelTask, RateLimitSlot
from tests.unit.pipeline.pipeline_support import START, approve, clock, mixpanel, pipeline_settings  # noqa: F401  # noqa: F401

REDIS_DB = 13  # this area's Redis database number


def later(seconds: float):
    return START + timedelta(seconds=seconds)


# --- database store (frozen clock) --------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("pipeline_settings")
def test_database_a_held_slot_stays_taken_while_its_call_runs_past_the_interval(clock):
    assert ratelimit.acquire("1:aa", until_finished=True) == 0.0
    clock.move_to(later(1.5))  # the step is still busy: a plain slot would have freed at 1.0
    assert ratelimit.acquire("1:aa") == 1.0  # look again within an interval, not when the hold runs out
    ratelimit.finished("1:aa")  # the call was answered at 1.5
    clock.move_to(later(2.4))
    assert ratelimit.acquire("1:aa") == pytest.approx(0.1)
    clock.move_to(later(2.5))
    assert ratelimit.acquire("1:aa") == 0.0


@pytest.mark.django_db
@pytest.mark.usefixtures("pipeline_settings")
def test_database_a_held_slot_frees_on_its_own_when_its_caller_died(clock, settings):
    settings.MIXPANEL_HTTP_TIMEOUT_SECONDS = 3.0
    assert ratelimit.hold_seconds() == 1.0 + 2 * 3.0 + ratelimit.HOLD_SLACK_SECONDS
    assert ratelimit.acquire("1:aa", until_finished=True) == 0.0
    clock.move_to(later(ratelimit.hold_seconds() - 0.1))
    assert ratelimit.acquire("1:aa") > 0
    clock.move_to(later(ratelimit.hold_seconds()))
    assert ratelimit.acquire("1:aa") == 0.0


@pytest.mark.django_db
@pytest.mark.usefixtures("pipeline_settings")
def test_database_a_caller_whose_hold_ran_out_does_not_cut_short_the_next_holder(clock):
    assert ratelimit.acquire("1:aa", until_finished=True) == 0.0
    # Its hold ran out and another worker took the slot for a call of its own.
    theirs = later(100)
    RateLimitSlot.objects.filter(key="1:aa").update(available_at=theirs)
    clock.move_to(later(40))
    ratelimit.finished("1:aa")
    assert RateLimitSlot.objects.get(key="1:aa").available_at == theirs


@pytest.mark.django_db
@pytest.mark.usefixtures("pipeline_settings")
def test_database_finishing_a_plain_slot_never_shortens_a_held_one(clock):
    RateLimitSlot.objects.create(key="1:aa", available_at=later(30))  # a step's call is in flight
    ratelimit.finished("1:aa")  # a caller that did not take the slot until_finished
    assert RateLimitSlot.objects.get(key="1:aa").available_at == later(30)


@pytest.mark.django_db
@pytest.mark.usefixtures("pipeline_settings")
def test_a_step_keeps_its_slot_while_its_call_runs_past_the_interval(
    clock, mixpanel, make_request, staff_actor, project
):
    approve(make_request, staff_actor)
    pipeline.plan_approved()
    task = MixpanelTask.objects.get()
    clock.move_to(task.next_attempt_at)
    key = ratelimit.key_for(project_id=project.pk, oauth_token=project.oauth_token)
    others: list[float] = []
    create = mixpanel._create_deletion

    def slow_create(tracking_id, body, request):
        # The step took its slot, then spent 5 s (database work, a row lock) before its request arrived here.
        clock.move_to(timezone.now() + timedelta(seconds=5))
        others.append(ratelimit.acquire(key))  # another worker asks for the project's slot meanwhile
        return create(tracking_id, body, request)

    mixpanel._create_deletion = slow_create
    assert pipeline.task_step(task_id=task.pk) == "submitted"
    answered = timezone.now()
    assert others == [1.0]  # refused: the step's call had not been answered yet
    clock.move_to(answered + timedelta(seconds=0.9))
    assert ratelimit.acquire(key) == pytest.approx(0.1)
    clock.move_to(answered + timedelta(seconds=1))
    assert ratelimit.acquire(key) == 0.0


# --- Redis store (real time) --------------------------------------------------------------------------


@pytest.fixture
def redis_key(require_redis, settings):
    """A fresh limiter key on this area's Redis database; only that key is removed afterwards."""
    parts = urlsplit(require_redis)
    settings.REDIS_URL = urlunsplit((parts.scheme, parts.netloc, f"/{REDIS_DB}", "", ""))
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 0.2
    settings.MIXPANEL_HTTP_TIMEOUT_SECONDS = 3.0
    key = f"test-hold:{uuid.uuid4().hex}"
    yield key
    ratelimit._redis().delete(ratelimit.REDIS_PREFIX + key)


def test_redis_a_held_slot_stays_taken_while_its_call_runs_past_the_interval(redis_key):
    assert ratelimit.acquire(redis_key, until_finished=True) == 0.0
    time.sleep(0.35)  # well past the 0.2 s interval: the call is still running
    assert 0 < ratelimit.acquire(redis_key) <= 0.2
    ratelimit.finished(redis_key)
    assert 0.1 < ratelimit.acquire(redis_key) <= 0.2
    time.sleep(0.25)
    assert ratelimit.acquire(redis_key) == 0.0


def test_redis_a_held_slot_frees_on_its_own_after_the_hold(redis_key):
    assert ratelimit.acquire(redis_key, until_finished=True) == 0.0
    left_ms = ratelimit._redis().pttl(ratelimit.REDIS_PREFIX + redis_key)
    assert ratelimit.hold_seconds() * 1000 - 1000 < left_ms <= ratelimit.hold_seconds() * 1000


def test_redis_a_caller_whose_hold_ran_out_does_not_cut_short_the_next_holder(redis_key):
    client = ratelimit._redis()
    assert ratelimit.acquire(redis_key, until_finished=True) == 0.0
    # Its hold ran out and another worker took the slot for a call of its own.
    client.set(ratelimit.REDIS_PREFIX + redis_key, "someone-else", px=30_000)
    ratelimit.finished(redis_key)
    assert client.get(ratelimit.REDIS_PREFIX + redis_key) == b"someone-else"
    assert client.pttl(ratelimit.REDIS_PREFIX + redis_key) > 20_000
