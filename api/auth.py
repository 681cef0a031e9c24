"""API keys: created by `murmur keys create`, shown once, kept only as their SHA-256.

A key is 32 random bytes, so a plain (unsalted) digest is enough: nothing
about it can be guessed, and a lookup by digest is one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from murmur.api.errors import ApiError
from murmur.db import queries

PREFIX = "mm-"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    """The key of the HMAC that signs one API key's webhooks: its tenant verifies with it, and no other can forge them."""
    return "whsec-" + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    owner: str | None  # the key's id; None on a keyless server bound to loopback
    max_jobs: int
    top_priority: int = 0  # the most urgent priority the key may ask

    @property
    def keyless(self) -> bool:
        return self.owner is None


class Callers:
    """Who is calling, from the Authorization header, or 401.

    With no key in the database a server on loopback lets anyone in (one
    machine, one user), whatever key an SDK sends, to the jobs that belong to
    no key (never those of keys deleted since); a server on another interface
    then lets nobody in. What the database said (whether any key
    exists, whose a digest is, or that it is no key's) is kept for
    CACHE_SECONDS, so a burst of requests does not ask it again for each: a
    deleted key stops working within that; a new key works at once.
    """

    CACHE_SECONDS = 2.0
    MAX_CACHED = 4096  # beyond this many answers, the stale ones are dropped (unknown keys sent over and over)

    def __init__(self, db: sessionmaker[Session], default_max_jobs: int, public: bool) -> None:
        self.db, self.default_max_jobs, self.public = db, default_max_jobs, public
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, object]] = {}

    def identify(self, authorization: str | None, cached_only: bool = False) -> Caller | None:
        """The caller, or ApiError 401. With `cached_only`, None where the answer needs the database:
        the event loop asks from the cache first and goes to a thread only then."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        now = time.monotonic()
        try:
            if key:  # asked first: the first key made on a keyless server counts at once
                key_digest = digest(key)
                found = self._recall(key_digest, now, lambda: self._lookup(key_digest), cached_only)
                if found is not None:
                    return found
            any_key = self._recall("", now, lambda: queries.has_keys(self.db), cached_only)
        except _NotCached:
            return None
        if not any_key:
            if self.public:
                raise ApiError(401, "no API key exists: create one with `murmur keys create NAME`",
                               "authentication_error", "invalid_api_key")
            return Caller(None, self.default_max_jobs)
        if not key:
            raise ApiError(401, "send your API key as `Authorization: Bearer KEY`", "authentication_error",
                           "invalid_api_key")
        raise ApiError(401, "unknown API key", "authentication_error", "invalid_api_key")

    def _lookup(self, key_digest: str) -> Caller | None:
        found = queries.key_by_digest(self.db, key_digest)
        return None if found is None else Caller(found.id, found.max_jobs or self.default_max_jobs, found.top_priority or 0)

    def _recall(self, name: str, now: float, ask, cached_only: bool):
        with self._lock:
            hit = self._answers.get(name)
        if hit and now - hit[0] < self.CACHE_SECONDS:
            return hit[1]
        if cached_only:
            raise _NotCached
        answer = ask()
        with self._lock:
            if len(self._answers) >= self.MAX_CACHED:
                self._answers = {k: v for k, v in self._answers.items() if now - v[0] < self.CACHE_SECONDS}
            self._answers[name] = (now, answer)
        return answer


class _NotCached(Exception):
    pass
