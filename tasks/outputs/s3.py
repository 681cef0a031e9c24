"""A finished job's transcript written out where MURMUR_OUTPUT_URI points: one object per format.

`s3://bucket/prefix/` receives `prefix/<job id>.json`, `.srt`, `.vtt` and
`.txt` before the job is marked done, so a job that reads `done` has its files.
The endpoint and credentials are boto3's own (AWS_ENDPOINT_URL, AWS_* or a role).
"""

from __future__ import annotations

from murmur.tasks.outputs.formats import FORMATS, render
from murmur.workers.cpu.sources import split_s3
from murmur.workers.errors import Failure, MurmurError
from murmur.workers.transcript import Transcript

CONTENT_TYPES = {"json": "application/json", "srt": "application/x-subrip", "vtt": "text/vtt",
                 "txt": "text/plain; charset=utf-8"}


def write_outputs(uri: str, transcript: Transcript) -> list[str]:
    """Upload the transcript in every format; the URIs written."""
    try:
        import boto3
    except ImportError:
        raise MurmurError("MURMUR_OUTPUT_URI needs boto3: pip install 'murmur[s3]'", Failure.internal) from None
    bucket, prefix = split_s3(uri)
    client = boto3.client("s3")
    written = []
    for fmt in FORMATS:
        key = f"{prefix}{transcript.job_id}.{fmt}"
        try:
            client.put_object(Bucket=bucket, Key=key, Body=render(transcript, fmt).encode(),
                              ContentType=CONTENT_TYPES[fmt])
        except Exception as exc:  # botocore raises many kinds; the job needs the reason, not the type
            raise MurmurError(f"cannot write the transcript to s3://{bucket}/{key} (MURMUR_OUTPUT_URI): {exc}",
                              Failure.internal) from None
        written.append(f"s3://{bucket}/{key}")
    return written
