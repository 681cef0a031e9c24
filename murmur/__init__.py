"""murmur: batched Whisper transcription, in one process or on a Celery worker fleet.

    import murmur
    print(murmur.transcribe("talk.mp3", language="en").text)       # in this process

    client = murmur.Client()                                        # through the fleet
    job_id = client.submit("/data/talk.mp3")
    client.wait(job_id)
    print(murmur.render(client.result(job_id), "srt"))

The import package maps the repository's folders: `murmur.api` (the HTTP
door), `murmur.tasks` (the Celery edge and the runners), `murmur.db` (the store
of record) and `murmur.workers` (the compute); the command line (`murmur.cli`)
and the settings live here. The names below load on first use, so
`import murmur` alone loads neither Celery nor torch.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "Client": "murmur.tasks.fleet.client",
    "JobFailed": "murmur.tasks.fleet.client",
    "JobStatus": "murmur.tasks.fleet.client",
    "JobOptions": "murmur.workers.options",
    "MurmurError": "murmur.workers.errors",
    "Segment": "murmur.workers.transcript",
    "Transcript": "murmur.workers.transcript",
    "Word": "murmur.workers.transcript",
    "render": "murmur.tasks.outputs.formats",
    "transcribe": "murmur.tasks.embedded.runner",
    "transcribe_files": "murmur.tasks.embedded.files",
    "transcribe_stream": "murmur.tasks.embedded.runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'murmur' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
