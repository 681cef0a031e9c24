"""Who is calling the API: keys on a real (SQLite) database, and what is asked of it per request."""

from __future__ import annotations

import time

import pytest

from murmur.api.auth import Callers, digest, new_key
from murmur.api.errors import ApiError
from murmur.db import queries
from murmur.db.session import sessions, upgrade


@pytest.fixture()
def counted(sqlite_url, monkeypatch):
    """A fresh database, and the list of the questions the callers put to it."""
    upgrade(sqlite_url)
    asked: list[str] = []
    for name in ("has_keys", "key_by_digest"):
        real = getattr(queries, name)
        monkeypatch.setattr(queries, name, lambda *args, _real=real, _name=name: asked.append(_name) or _real(*args))
    return sessions(sqlite_url), asked


def test_a_keyless_loopback_server_lets_any_sdk_key_in_and_asks_once_per_cache_time(counted):
    db, asked = counted
    callers = Callers(db, default_max_jobs=4, public=False)
    assert callers.identify("Bearer sk-anything", cached_only=True) is None  # nothing known yet: ask on a thread
    for _ in range(3):
        for header in ("Bearer sk-anything", "Bearer none: loopback", None):
            assert callers.identify(header).owner is None
    assert callers.identify("Bearer none: loopback", cached_only=True).owner is None  # from the cache, no trip
    assert asked == ["key_by_digest", "has_keys", "key_by_digest"]  # once per answer, not per request
    with pytest.raises(ApiError, match="no API key exists"):
        Callers(db, default_max_jobs=4, public=True).identify("Bearer sk-anything")


def test_keys_are_known_forgotten_and_refused_within_the_cache_time(counted):
    db, asked = counted
    callers = Callers(db, default_max_jobs=4, public=False)
    callers.CACHE_SECONDS = 0.5
    assert callers.identify(None).owner is None  # no key yet: open, and that answer is kept
    key = new_key()
    row = queries.create_key(db, "alice", digest(key), max_jobs=2)
    found = callers.identify(f"Bearer {key}")  # the first key counts at once, within the cache time
    assert (found.owner, found.max_jobs) == (row.id, 2)
    time.sleep(0.6)  # "no key exists" lapses
    assert callers.identify(f"Bearer {key}") == found
    for _ in range(3):
        with pytest.raises(ApiError, match="unknown API key"):
            callers.identify("Bearer mm-not-a-key")
    with pytest.raises(ApiError, match="send your API key"):
        callers.identify(None)
    assert callers.identify(f"Bearer {key}", cached_only=True) == found
    # an unknown key is asked about once too
    assert asked == ["has_keys", "key_by_digest", "key_by_digest", "key_by_digest", "has_keys"]
    assert queries.delete_key(db, "alice")
    time.sleep(0.6)
    assert callers.identify(f"Bearer {key}", cached_only=True) is None  # stale: the database decides
    assert callers.identify(f"Bearer {key}").owner is None  # no key left: a loopback server is open again
