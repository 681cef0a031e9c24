"""Errors a job can fail with: a readable line for the user and the class of failure it belongs to.

The class (`Failure`) travels with the error to the job row, so the API's
status code and the exporter's failure counts read it, never the wording.
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    """Why a job failed, as an operator sorts it: whose move it is, and whether to alert."""

    input = "input"  # the submitter's: not audio, an invalid option
    source = "source"  # the source could not be read (missing file, download failed)
    forbidden = "forbidden"  # outside MURMUR_ALLOWED_ROOTS or MURMUR_MODEL_DIRS, a non-public webhook
    limit = "limit"  # over MURMUR_MAX_DURATION or MURMUR_MAX_BYTES
    gave_up = "gave_up"  # its worker died on it MURMUR_MAX_ATTEMPTS times
    cancelled = "cancelled"  # its owner cancelled it
    internal = "internal"  # murmur's own fault: the exception is in the worker's log


class MurmurError(Exception):
    """A failure that belongs to the job (bad input, unknown model), not a bug.

    The message is one readable line: it is stored on the job row and printed
    by the CLI as is. `failure` is its class; subclasses set their own.
    """

    failure = Failure.input

    def __init__(self, message: str, failure: Failure | None = None) -> None:
        super().__init__(message)
        if failure is not None:
            self.failure = failure


class AudioError(MurmurError):
    """The source was read but is not usable audio (empty, corrupt, truncated, no audio stream)."""


class SourceError(MurmurError):
    """The source could not be read: no such file, a download that failed."""

    failure = Failure.source


class ForbiddenError(MurmurError):
    """A source, model or webhook this deployment does not let a job reach."""

    failure = Failure.forbidden


class LimitError(MurmurError):
    """The source is over a limit of this deployment."""

    failure = Failure.limit


class ModelError(MurmurError):
    """The model name does not resolve or its files are unusable."""


class ServiceUnavailable(MurmurError):
    """The broker or the database did not answer a submission: nothing was submitted, and trying again is safe."""

    failure = Failure.internal


def failure_of(exc: BaseException) -> tuple[str, Failure]:
    """The reason and class a job records for `exc`: a MurmurError as it reads; anything else is
    murmur's own fault, named by its type (the traceback goes to the log, not to the job)."""
    if isinstance(exc, MurmurError):
        return str(exc), exc.failure
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", Failure.internal
    return f"internal error: {type(exc).__name__}: {exc}", Failure.internal
