"""A finished job's transcript written out where MURMUR_OUTPUT_URI points: one object per format.

`s3://bucket/prefix/` receives `prefix/<job id>.json`, `.srt`, `.vtt` and
`.txt` before the job is marked done, so a job that reads `done` has its files;
they go with the job when it is deleted or pruned. The endpoint and credentials
are boto3's own (AWS_ENDPOINT_URL, AWS_* or a role).
"""

from __future__ import annotations

from murmur.tasks.outputs.formats import FORMATS, render
from murmur.workers.cpu.sources import split_s3
from murmur.workers.errors import Failure, MurmurError
from murmur.workers.transcript import Transcript

CONTENT_TYPES = {"json": "application/json", "srt": "application/x-subrip", "vtt": "text/vtt",
                 "txt": "text/plain; charset=utf-8"}


class OutputsUnavailable(Exception):
    """S3 failed to take a transcript for a passing reason (an error on its side, throttling, no
    connection): the assembly is tried again later, and the job is not failed for it."""


# S3's answers that say "not now" rather than "no": botocore retries them a few times itself first
_PASSING = {"InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
            "RequestTimeTooSkewed", "500", "502", "503", "504"}


def write_outputs(uri: str, transcript: Transcript) -> list[str]:
    """Upload the transcript in every format; the URIs written. A refusal (no such bucket, access denied)
    fails the job with S3's reason; a passing error raises OutputsUnavailable, for the caller to try again."""
    bucket, prefix = split_s3(uri)
    client = _client()
    written = []
    for fmt in FORMATS:
        key = f"{prefix}{transcript.job_id}.{fmt}"
        try:
            client.put_object(Bucket=bucket, Key=key, Body=render(transcript, fmt).encode(),
                              ContentType=CONTENT_TYPES[fmt])
        except Exception as exc:  # botocore raises many kinds; the job needs the reason, not the type
            if _passing(exc):
                raise OutputsUnavailable(f"s3://{bucket}/{key}: {exc}") from None
            raise MurmurError(f"cannot write the transcript to s3://{bucket}/{key} (MURMUR_OUTPUT_URI): {exc}",
                              Failure.internal) from None
        written.append(f"s3://{bucket}/{key}")
    return written


def delete_outputs(uri: str, job_ids: list[str]) -> None:
    """Remove the transcript files of deleted jobs (a thousand keys a call, S3's most)."""
    bucket, prefix = split_s3(uri)
    keys = [f"{prefix}{job_id}.{fmt}" for job_id in job_ids for fmt in FORMATS]
    client = _client()
    for start in range(0, len(keys), 1000):
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                              "Quiet": True})
        if answer.get("Errors"):  # S3 answers 200 and lists what it refused (no s3:DeleteObject, say)
            first = answer["Errors"][0]
            raise MurmurError(f"{len(answer['Errors'])} transcript file(s) were not deleted from s3://{bucket}: "
                              f"{first.get('Key')}: {first.get('Code')}", Failure.internal)


def _client():
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise MurmurError("MURMUR_OUTPUT_URI needs boto3: pip install 'murmur[s3]'", Failure.internal) from None
    return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5}))


def _passing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return True
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _PASSING
