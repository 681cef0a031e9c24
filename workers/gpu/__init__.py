"""Decoding side: model loading, batched decode, language detection, filters."""
