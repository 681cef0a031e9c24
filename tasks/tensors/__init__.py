"""Tensor stores: where a chunk's features wait between prepare and decode (a claim check).

`store` holds the interface and what a message carries instead of the array;
`local` is the embedded runner's in-process twin of `redis`, the fleet's.
"""
