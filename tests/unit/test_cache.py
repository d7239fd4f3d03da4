"""The Redis cache backend (gdpr_requests/cache.py) on a real Redis: Django's semantics, one client object per
server, and a hit counter that takes one round trip and always expires."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.cache import cache, caches
from redis.connection import AbstractConnection

from gdpr_requests.cache import _COUNT_HIT, count_hit

REDIS_DB = 13  # this area's Redis database number; only this run's keys (a prefix of its own) are removed


@pytest.fixture
def redis_cache(require_redis, settings):
    """The default cache on this area's Redis database, its keys under a prefix of this test's own."""
    parts = urlsplit(require_redis)
    prefix = f"test-cache-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "gdpr_requests.cache.RedisCache",
            "LOCATION": urlunsplit((parts.scheme, parts.netloc, f"/{REDIS_DB}", "", "")),
            "KEY_PREFIX": prefix,
        }
    }
    backend = caches["default"]
    raw = backend._cache.get_client(write=True)
    yield raw
    for key in raw.scan_iter(match=f"{prefix}:*"):
        raw.delete(key)


@pytest.fixture
def round_trips(monkeypatch) -> list[bytes]:
    """What each command sent to Redis from now on (one entry per write to a connection)."""
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command if isinstance(command, bytes) else b"".join(command))
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


def test_it_keeps_djangos_semantics_for_get_set_add_and_incr(redis_cache):
    cache.set("answer", {"a": 1}, 30)
    assert cache.get("answer") == {"a": 1}
    assert cache.add("answer", "other", 30) is False
    assert cache.add("fresh", 5, 30) is True
    assert cache.incr("fresh") == 6
    assert cache.incr("fresh", 10) == 16
    assert cache.get("fresh") == 16
    with pytest.raises(ValueError, match="not found"):
        cache.incr("missing")
    assert cache.get("missing") is None  # a refused incr creates nothing


def test_it_builds_one_client_object_per_server(redis_cache):
    backend = caches["default"]._cache
    assert backend.get_client(write=True) is backend.get_client(write=False) is redis_cache


def test_a_hit_counter_starts_at_one_counts_up_and_expires_with_its_window(redis_cache):
    assert [count_hit("window:1", timeout=61) for _ in range(3)] == [1, 2, 3]
    stored = caches["default"].make_and_validate_key("window:1")
    assert 59 <= redis_cache.ttl(stored) <= 61
    assert cache.get("window:1") == 3  # the value Django's backend reads back


def test_a_hit_takes_one_round_trip_once_the_script_is_loaded(redis_cache, round_trips):
    count_hit("window:2", timeout=10)
    round_trips.clear()
    assert count_hit("window:2", timeout=10) == 2
    assert len(round_trips) == 1 and b"EVALSHA" in round_trips[0]


def test_a_hit_counter_loads_its_script_again_when_redis_lost_it(redis_cache):
    count_hit("window:3", timeout=10)
    # As after a restart of Redis: EVALSHA answers NOSCRIPT (a digest nothing was loaded under, rather than
    # SCRIPT FLUSH, which would empty the script cache of everyone sharing this server).
    caches["default"]._cache._scripts[_COUNT_HIT].sha = "0" * 40
    assert count_hit("window:3", timeout=10) == 2


def test_on_a_cache_without_counters_a_hit_counts_the_portable_way(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "t"}}
    assert [count_hit("window:4", timeout=60) for _ in range(3)] == [1, 2, 3]
    cache.delete("window:4")  # expired or evicted meanwhile: the count starts again
    assert count_hit("window:4", timeout=60) == 1
