"""`python -m murmur`: the same command line as the `murmur` script."""

from murmur.tasks.cli import entry

entry()
