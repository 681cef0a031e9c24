"""API keys: created by `murmur keys create`, shown once, kept only as their SHA-256.

A key is 32 random bytes, so a plain (unsalted) digest is enough: nothing
about it can be guessed, and a lookup by digest is one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
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


def any_keys(db: sessionmaker[Session]) -> bool:
    return bool(queries.list_keys(db))


def identify(db: sessionmaker[Session], authorization: str | None, default_max_jobs: int, public: bool) -> Caller:
    """The caller of a request, or 401.

    With no key in the database a server on loopback lets anyone in (one
    machine, one user); a server on another interface then lets nobody in.
    """
    scheme, _, key = (authorization or "").partition(" ")
    if not any_keys(db):
        if public:
            raise ApiError(401, "no API key exists: create one with `murmur keys create NAME`", "authentication_error",
                           "invalid_api_key")
        return Caller(None, default_max_jobs)
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "send your API key as `Authorization: Bearer KEY`", "authentication_error", "invalid_api_key")
    found = queries.key_by_digest(db, digest(key.strip()))
    if found is None:
        raise ApiError(401, "unknown API key", "authentication_error", "invalid_api_key")
    return Caller(found.id, found.max_jobs or default_max_jobs)
