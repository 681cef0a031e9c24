"""Errors a job can fail with; their message is what the user reads."""


class MurmurError(Exception):
    """A failure that belongs to the job (bad input, unknown model), not a bug.

    The message is one readable line: it is stored on the job row and printed
    by the CLI as is.
    """


class AudioError(MurmurError):
    """The source could not be read or decoded as audio."""


class ModelError(MurmurError):
    """The model name does not resolve or its files are unusable."""
