"""Preparation side: audio decoding, VAD, chunking and log-mel features."""
