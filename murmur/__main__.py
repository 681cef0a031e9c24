"""`python -m murmur`: the same command line as the `murmur` script."""

from murmur.cli import entry

entry()
