"""The embedded runner: a job in this process, no broker (`murmur transcribe`, `murmur serve --embedded`).

`runner` runs a job's stages over decoders side by side; `planning` decides,
before anything is decoded, how many decoders a file keeps busy and how its
chunks are shared out among them.
"""
