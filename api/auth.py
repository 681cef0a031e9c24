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


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    owner: str | None  # the key's id; None on a keyless server bound to loopback
    max_jobs: int


class Callers:
    """Who is calling, from the Authorization header, or 401.

    With no key in the database a server on loopback lets anyone in (one
    machine, one user); a server on another interface then lets nobody in.
    What the database said is kept for CACHE_SECONDS, so a burst of requests
    does not ask it again for each: a deleted key stops working within that.
    """

    CACHE_SECONDS = 2.0

    def __init__(self, db: sessionmaker[Session], default_max_jobs: int, public: bool) -> None:
        self.db, self.default_max_jobs, self.public = db, default_max_jobs, public
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[float, Caller]] = {}
        self._any: tuple[float, bool] | None = None

    def identify(self, authorization: str | None) -> Caller:
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        now = time.monotonic()
        if key:
            found = self._cached_key(digest(key), now)
            if found is not None:
                return found
        if not self._cached_any(now):
            if self.public:
                raise ApiError(401, "no API key exists: create one with `murmur keys create NAME`",
                               "authentication_error", "invalid_api_key")
            return Caller(None, self.default_max_jobs)
        if not key:
            raise ApiError(401, "send your API key as `Authorization: Bearer KEY`", "authentication_error",
                           "invalid_api_key")
        raise ApiError(401, "unknown API key", "authentication_error", "invalid_api_key")

    def _cached_key(self, key_digest: str, now: float) -> Caller | None:
        with self._lock:
            hit = self._keys.get(key_digest)
        if hit and now - hit[0] < self.CACHE_SECONDS:
            return hit[1]
        found = queries.key_by_digest(self.db, key_digest)
        if found is None:
            return None
        caller = Caller(found.id, found.max_jobs or self.default_max_jobs)
        with self._lock:
            self._keys[key_digest] = (now, caller)
        return caller

    def _cached_any(self, now: float) -> bool:
        if self._any is None or now - self._any[0] >= self.CACHE_SECONDS:
            self._any = (now, queries.has_keys(self.db))
        return self._any[1]
