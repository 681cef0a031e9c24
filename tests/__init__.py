"""The test suite: real audio, weights, databases and workers; markers `services` and `weights` (see README)."""
