"""The Redis cache backend the settings name, and the fixed-window hit counter that every rate limit shares.

Django's RedisCache builds a new ``redis.Redis`` object for every call (redis-py fills some 170 response
callbacks into each one) and its ``incr`` asks whether the key exists before incrementing it. A rate limit
written as ``cache.add`` + ``cache.incr`` therefore cost three round trips and two client objects per request.
Here each backend keeps one client per server (redis-py clients are thread-safe; Django gives each thread its
own backend anyway), ``incr`` is one atomic script, and ``count_hit`` counts a hit and sets the window's expiry
in one round trip.

Keys and values are the ones Django's backend writes (integers are stored unpickled), so counters started by
either backend go on counting under the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

# INCR creates a missing key at 1; the first hit of a window sets its expiry, in the same atomic step, so a
# counter never outlives its window by more than the timeout and never lives forever.
_COUNT_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
# Django's incr(): only an existing key, else ValueError (nil here); without the separate EXISTS round trip,
# and without its race (a key expiring between EXISTS and INCR came back as a counter without expiry).
_INCR_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return false
"""


class _ReusingClient(RedisCacheClient):
    # Set by Django's RedisCacheClient; django-stubs leaves them out.
    _servers: list[str]
    _pools: dict[int, Any]
    _pool_class: Any
    _pool_options: dict[str, Any]
    _client: Any
    _get_connection_pool_index: Callable[[bool], int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}
        self._scripts: dict[str, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            if index not in self._pools:
                self._pools[index] = self._pool_class.from_url(self._servers[index], **self._pool_options)
            client = self._clients[index] = self._client(connection_pool=self._pools[index])
        return client

    def _script(self, source: str) -> Any:
        """The script registered on the writing server's client (sent by EVALSHA, loaded on first use)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.get_client(write=True).register_script(source)
        return script

    def incr(self, key: Any, delta: int) -> int:
        value = self._script(_INCR_EXISTING)(keys=[key], args=[delta])
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return int(value)

    def count_hit(self, key: str, timeout: int) -> int:
        return int(self._script(_COUNT_HIT)(keys=[key], args=[max(1, timeout)]))


class RedisCache(DjangoRedisCache):
    """Django's RedisCache with one client object per server and one-round-trip counters."""

    _cache: _ReusingClient  # Django's cached property, built from _class

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _ReusingClient

    def count_hit(self, key: str, timeout: int, version: int | None = None) -> int:
        key = self.make_and_validate_key(key, version=version)
        return self._cache.count_hit(key, timeout)


def count_hit(key: str, *, timeout: int) -> int:
    """Count one hit on the counter ``key`` and return its new value; a new counter starts at 1 and lives
    ``timeout`` seconds from its first hit (the fixed window's length plus a margin).

    One round trip on the RedisCache above; on any other cache (locmem in development and tests) the portable
    add + incr.
    """
    counter = getattr(caches["default"], "count_hit", None)
    if counter is not None:
        return int(counter(key, timeout))
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # the counter expired or was evicted between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1
