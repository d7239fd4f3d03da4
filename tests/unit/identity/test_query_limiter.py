"""The Query API limiter: a rolling window and a concurrency budget per key, in the database or in Redis, that
never sleeps (it says how long to wait) and never lets parallel takers past either budget."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
import time_machine

from gdpr_requests.identity import query_limiter
from tests.unit.identity.identity_support import START


@pytest.fixture(params=["db", "redis"])
def store(request, settings, db):
    settings.MIXPANEL_QUERY_LIMIT = 6
    settings.MIXPANEL_QUERY_WINDOW_SECONDS = 60.0
    settings.MIXPANEL_QUERY_CONCURRENCY = 3
    settings.MIXPANEL_HTTP_TIMEOUT_SECONDS = 5.0
    if request.param == "redis":
        request.getfixturevalue("require_redis")
    else:
        settings.REDIS_URL = ""
    return request.param


def _key() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


def test_concurrency_is_capped_until_a_query_is_released(store) -> None:
    key = _key()
    tokens = [query_limiter.acquire(key)[0] for _ in range(3)]
    assert all(tokens)
    token, wait = query_limiter.acquire(key)
    assert token is None and wait == query_limiter.BUSY_RETRY_SECONDS
    query_limiter.release(key, tokens[0])
    assert query_limiter.acquire(key)[0] is not None
    assert query_limiter.usage(key) == (4, 3)


def test_the_window_counts_released_queries_until_they_age_out_and_says_how_long_to_wait(store) -> None:
    if store == "redis":
        pytest.skip("Redis keeps its own clock; the window's ageing is checked on the database store")
    key = _key()
    with time_machine.travel(START, tick=False) as clock:
        for _ in range(6):
            token, _ = query_limiter.acquire(key)
            query_limiter.release(key, token)
            clock.shift(5)
        token, wait = query_limiter.acquire(key)
        # The oldest query was taken 30 s ago: a slot frees 30 s from now.
        assert token is None and wait == pytest.approx(30.0)
        clock.shift(30.001)
        assert query_limiter.acquire(key)[0] is not None


def test_a_slot_never_used_is_given_back_to_the_window_but_a_used_one_is_not(store) -> None:
    key = _key()
    for _ in range(5):
        token, _ = query_limiter.acquire(key)
        query_limiter.release(key, token)
    unused, _ = query_limiter.acquire(key)
    assert query_limiter.acquire(key)[0] is None
    query_limiter.release(key, unused, used=False)
    last, _ = query_limiter.acquire(key)
    assert last is not None
    query_limiter.release(key, last)
    query_limiter.release(key, last, used=False)  # a redelivered task's second word does not undo the first
    assert query_limiter.acquire(key)[0] is None


def test_a_dead_callers_hold_runs_out(store, settings) -> None:
    if store == "redis":
        pytest.skip("Redis keeps its own clock")
    key = _key()
    with time_machine.travel(START, tick=False) as clock:
        for _ in range(3):
            assert query_limiter.acquire(key)[0] is not None
        assert query_limiter.acquire(key)[0] is None
        clock.shift(timedelta(seconds=query_limiter.hold_seconds() + 1))
        assert query_limiter.acquire(key)[0] is not None


def test_parallel_takers_never_exceed_the_window(store, settings, transactional_db) -> None:
    if store == "db" and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        settings.MIXPANEL_QUERY_CONCURRENCY = 100  # SQLite: one writer at a time; the count is what is checked
    key = _key()
    granted: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        from django.db import connection

        try:
            for _ in range(4):
                token, _wait = query_limiter.acquire(key)
                if token:
                    with lock:
                        granted.append(token)
                    query_limiter.release(key, token)
        finally:
            connection.close()

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 6


def test_a_released_query_counts_from_its_end_so_the_window_holds_at_mixpanels_end(store) -> None:
    if store == "redis":
        pytest.skip("Redis keeps its own clock")
    key = _key()
    with time_machine.travel(START, tick=False) as clock:
        tokens = [query_limiter.acquire(key)[0] for _ in range(3)]
        clock.shift(10)  # the first query's answer took 10 s
        query_limiter.release(key, tokens[0])
        query_limiter.release(key, tokens[1])
        query_limiter.release(key, tokens[2])
        for _ in range(3):
            query_limiter.release(key, query_limiter.acquire(key)[0])
        clock.shift(55)  # 65 s after the first was taken, 55 s after it was answered
        token, wait = query_limiter.acquire(key)
        assert token is None and wait == pytest.approx(5.0)


def test_the_next_page_needs_no_second_concurrency_slot_but_room_in_the_window(store) -> None:
    key = _key()
    tokens = [query_limiter.acquire(key)[0] for _ in range(3)]
    assert all(tokens) and query_limiter.acquire(key)[0] is None  # three running: concurrency is full
    page = tokens[0]
    for _ in range(3):  # the pages of one query run one after the other: each takes its predecessor's place
        page, wait = query_limiter.next_page(key, page)
        assert page is not None and wait == 0.0
    assert query_limiter.usage(key) == (6, 3)
    refused, wait = query_limiter.next_page(key, page)
    assert refused is None and wait > query_limiter.BUSY_RETRY_SECONDS  # the window is full until one ages out
    assert query_limiter.usage(key) == (6, 2)  # the answered page is released all the same


def test_a_taker_that_may_page_leaves_room_for_one_more_page_of_every_query_running(store) -> None:
    key = _key()
    for _ in range(2):
        query_limiter.release(key, query_limiter.acquire(key, leave_room_to_page=True)[0])
    first, _ = query_limiter.acquire(key, leave_room_to_page=True)
    second, _ = query_limiter.acquire(key, leave_room_to_page=True)
    assert first and second and query_limiter.usage(key) == (4, 2)
    # A third would leave no room for the two running queries' next pages: wait for one of them to end.
    token, wait = query_limiter.acquire(key, leave_room_to_page=True)
    assert token is None and wait == query_limiter.BUSY_RETRY_SECONDS
    first_next, _ = query_limiter.next_page(key, first)
    second_next, _ = query_limiter.next_page(key, second)
    assert first_next and second_next
    query_limiter.release(key, first_next)
    query_limiter.release(key, second_next)
    token, wait = query_limiter.acquire(key, leave_room_to_page=True)
    assert token is None and wait > query_limiter.BUSY_RETRY_SECONDS  # nothing runs: until the oldest ages out


def test_room_to_page_never_keeps_a_one_query_window_from_being_used(store, settings) -> None:
    settings.MIXPANEL_QUERY_LIMIT = 1
    key = _key()
    assert query_limiter.acquire(key, leave_room_to_page=True)[0] is not None


def test_a_query_still_running_counts_in_the_window_however_long_ago_its_slot_was_taken(store, settings) -> None:
    if store == "redis":
        pytest.skip("Redis keeps its own clock")
    settings.MIXPANEL_HTTP_TIMEOUT_SECONDS = 60.0  # a hold (2 x 60 + 10 s) outlasts the 60 s window
    key = _key()
    with time_machine.travel(START, tick=False) as clock:
        slow, _ = query_limiter.acquire(key)  # its message waits in a busy queue before the query is sent
        for _ in range(5):
            query_limiter.release(key, query_limiter.acquire(key)[0])
        clock.shift(61)  # the five answered queries aged out; the slow one may reach Mixpanel any moment
        granted = 0
        for _ in range(6):
            token, _wait = query_limiter.acquire(key)
            if token:
                granted += 1
                query_limiter.release(key, token)
        assert slow and granted == 5
