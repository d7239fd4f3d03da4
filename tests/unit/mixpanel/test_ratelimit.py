"""The shared Mixpanel rate limiter, on the database and on Redis: one slot per interval per key, no matter
how many callers ask at once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
import time_machine
from django.db import connection

from gdpr_requests.mixpanel import ratelimit
from gdpr_requests.models import RateLimitSlot

REDIS_DB = 2  # this area's Redis database number


@pytest.fixture
def db_limiter(settings):
    settings.REDIS_URL = ""
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 1.0
    return settings


@pytest.fixture
def redis_limiter(require_redis, settings):
    parts = urlsplit(require_redis)
    settings.REDIS_URL = urlunsplit((parts.scheme, parts.netloc, f"/{REDIS_DB}", "", ""))
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 0.5
    client = ratelimit._redis()
    client.flushdb()
    yield client
    client.flushdb()


def race(acquirers: int, acquire) -> list[float]:
    """Start ``acquirers`` threads at the same moment; each tries once. Returns what each got."""
    barrier = threading.Barrier(acquirers)
    results: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            value = acquire()
        finally:
            connection.close()
        with lock:
            results.append(value)

    threads = [threading.Thread(target=run) for _ in range(acquirers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == acquirers
    return results


def test_the_key_names_the_project_and_a_hash_of_the_credential_never_the_token():
    key = ratelimit.key_for(project_id=7, oauth_token="super-secret-oauth")
    assert key.startswith("7:") and "super-secret" not in key
    assert key != ratelimit.key_for(project_id=7, oauth_token="a-new-token")
    assert key == ratelimit.key_for(project_id=7, oauth_token="super-secret-oauth")


# --- database -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_database_one_slot_per_interval_and_the_wait_says_when_it_frees(db_limiter):
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        assert ratelimit.acquire("1:aa") == 0.0
        clock.move_to(start + timedelta(seconds=0.25))
        assert ratelimit.acquire("1:aa") == pytest.approx(0.75)
        assert ratelimit.acquire("2:bb") == 0.0  # another project has its own slot
        clock.move_to(start + timedelta(seconds=1))
        assert ratelimit.acquire("1:aa") == 0.0
        assert ratelimit.acquire("1:aa") == pytest.approx(1.0)
    assert ratelimit.wait_count() == 2
    assert RateLimitSlot.objects.get(key="1:aa").waits == 2


@pytest.mark.django_db
def test_a_wait_takes_nothing(db_limiter):
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        ratelimit.acquire("1:aa")
        for _ in range(5):
            ratelimit.acquire("1:aa")  # told to wait: must not push the slot further away
        clock.move_to(start + timedelta(seconds=1))
        assert ratelimit.acquire("1:aa") == 0.0


@pytest.mark.django_db
def test_database_the_next_call_starts_an_interval_after_the_end_of_a_slow_one(db_limiter):
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        assert ratelimit.acquire("1:aa") == 0.0
        clock.move_to(start + timedelta(seconds=0.7))  # the call took 0.7 s
        ratelimit.finished("1:aa")
        clock.move_to(start + timedelta(seconds=1.2))
        assert ratelimit.acquire("1:aa") == pytest.approx(0.5)
        clock.move_to(start + timedelta(seconds=1.7))
        assert ratelimit.acquire("1:aa") == 0.0


@pytest.mark.django_db
def test_a_zero_interval_disables_the_limiter(db_limiter):
    db_limiter.MIXPANEL_MIN_INTERVAL_SECONDS = 0
    assert [ratelimit.acquire("1:aa") for _ in range(3)] == [0.0, 0.0, 0.0]


@pytest.mark.django_db(transaction=True)
def test_database_concurrent_acquirers_never_both_get_the_slot(db_limiter):
    db_limiter.MIXPANEL_MIN_INTERVAL_SECONDS = 30.0  # each race happens well inside one interval
    # No row yet: the callers race to insert it.
    assert sorted(race(6, lambda: ratelimit.acquire("5:race"))).count(0.0) == 1
    # The slot is taken: nobody gets it.
    assert 0.0 not in race(6, lambda: ratelimit.acquire("5:race"))
    # The slot has freed: the callers race on the conditional UPDATE.
    RateLimitSlot.objects.filter(key="5:race").update(available_at=datetime(2000, 1, 1, tzinfo=UTC))
    assert sorted(race(6, lambda: ratelimit.acquire("5:race"))).count(0.0) == 1
    assert RateLimitSlot.objects.count() == 1


# --- Redis --------------------------------------------------------------------------------------------


def test_redis_one_slot_per_interval(redis_limiter):
    assert ratelimit.acquire("1:aa") == 0.0
    wait = ratelimit.acquire("1:aa")
    assert 0 < wait <= 0.5
    assert ratelimit.acquire("2:bb") == 0.0
    time.sleep(wait + 0.05)
    assert ratelimit.acquire("1:aa") == 0.0
    assert ratelimit.wait_count() == 1


def test_redis_the_next_call_starts_an_interval_after_the_end_of_a_slow_one(redis_limiter):
    assert ratelimit.acquire("1:slow") == 0.0
    time.sleep(0.3)
    ratelimit.finished("1:slow")
    assert 0.4 < ratelimit.acquire("1:slow") <= 0.5


def test_redis_concurrent_acquirers_never_both_get_the_slot(redis_limiter, settings):
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 30.0
    results = race(8, lambda: ratelimit.acquire("9:race"))
    assert sorted(results)[0] == 0.0
    assert sum(1 for r in results if r == 0.0) == 1
    assert all(0 < r <= 30.0 for r in results if r)


def test_redis_under_load_grants_no_more_than_one_slot_per_interval(redis_limiter, settings):
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 0.2
    granted: list[float] = []
    started = time.monotonic()
    stop = started + 1.0

    def worker() -> None:
        while time.monotonic() < stop:
            wait = ratelimit.acquire("3:load")
            if wait == 0:
                granted.append(time.monotonic())
            else:
                time.sleep(min(wait, 0.02))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = max(granted) - started
    # Counting, not timing gaps: robust to a thread descheduled between its grant and our clock reading.
    assert 3 <= len(granted) <= int(elapsed / 0.2) + 2


def test_an_unreachable_redis_is_reported_not_ignored(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/2"
    settings.MIXPANEL_MIN_INTERVAL_SECONDS = 1.0
    with pytest.raises(ratelimit.RateLimiterUnavailable):
        ratelimit.acquire("1:aa")
