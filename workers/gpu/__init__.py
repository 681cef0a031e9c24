"""Decoding side: model loading, batched decode, segmentation, language detection, packing, filters."""
