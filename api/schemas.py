"""The API's JSON answers and its multipart forms, as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from murmur.workers.options import LANGUAGES, MAX_BEAM_SIZE

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TRANSCRIPT_FORMATS = (*RESPONSE_FORMATS, "txt")  # txt: murmur's own name for text


class Transcription(BaseModel):
    text: str


class SegmentOut(BaseModel):
    id: int
    seek: int = Field(description="the segment's start in 10 ms frames")
    start: float
    end: float
    text: str
    tokens: list[int] = Field(description="always empty: murmur does not return token ids")
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class WordOut(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe", "translate"]
    language: str | None = Field(description="ISO 639-1 code (OpenAI gives the English name)")
    duration: float
    text: str
    segments: list[SegmentOut] | None = None
    words: list[WordOut] | None = None


class Job(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: Literal["queued", "running", "done", "failed"]
    chunks_done: int
    chunks_total: int | None
    language: str | None
    duration: float | None
    error: str | None
    created_at: datetime | None
    finished_at: datetime | None
    stage_seconds: dict[str, float] = Field(description="prepare, detect and decode wall time, summed over chunks")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job]


class Deleted(BaseModel):
    id: str
    object: Literal["job"] = "job"
    deleted: bool = Field(description="true: the ended job and its transcript are gone")
    cancelled: bool = Field(description="true: the job was queued or running and is now failed, `cancelled`")


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "murmur"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class JobFields(BaseModel):
    """POST /v1/jobs' options, as form fields or JSON."""

    model_config = {"extra": "forbid"}

    model: str | None = Field(None, min_length=1)
    language: str | None = Field(None, min_length=1)
    task: Literal["transcribe", "translate"] | None = None
    multilingual: bool | None = None
    output_language: Literal["hybrid", "en"] | None = None
    beam_size: int | None = Field(None, ge=1, le=MAX_BEAM_SIZE)
    word_timestamps: bool | None = None
    callback_url: str | None = None
    priority: int | None = Field(None, ge=0, le=9)


class JobRequest(JobFields):
    """POST /v1/jobs as JSON: a source the workers fetch themselves."""

    source: str = Field(description="an s3:// URI", pattern=r"^s3://[^/]+/.+")


_TEXT = {"type": "string"}
_AUDIO_FORM = {
    "file": {"type": "string", "format": "binary", "description": "the audio or video file"},
    "model": {**_TEXT, "minLength": 1, "description": "whisper-1 (the server's MURMUR_MODEL) or a name from GET /v1/models"},
    "language": {**_TEXT, "description": "ISO 639-1 code; default: detected"},
    "prompt": {**_TEXT, "description": "refused: murmur does not condition the decoder on a prompt"},
    "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": "json"},
    "temperature": {"type": "number", "description": "0 only (murmur decodes with beam search at temperature 0)"},
    "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["segment", "word"]},
                                  "description": "with verbose_json: segment (default) and/or word"},
}
_JOB_FORM = {
    "file": _AUDIO_FORM["file"],
    "model": _AUDIO_FORM["model"],
    "language": _AUDIO_FORM["language"],
    "task": {"type": "string", "enum": ["transcribe", "translate"]},
    "multilingual": {"type": "boolean"},
    "output_language": {"type": "string", "enum": ["hybrid", "en"]},
    "beam_size": {"type": "integer", "minimum": 1, "maximum": MAX_BEAM_SIZE},
    "word_timestamps": {"type": "boolean"},
    "callback_url": {**_TEXT, "description": "POSTed a signed JSON summary once when the job ends (fleet only)"},
    "priority": {"type": "integer", "minimum": 0, "maximum": 9, "description": "0 (default, most urgent) to 9"},
}


EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["progress", "done", "failed", "deleted"]},
    "data": {"type": "string", "description": "the job as GET /v1/jobs/{id} gives it, as JSON (null once deleted)"}}}


def multipart_body(form: dict, required: tuple[str, ...] = ("file",)) -> dict:
    return {"multipart/form-data": {"schema": {"type": "object", "properties": form, "required": list(required)}}}


def _choices(models: list[str]) -> dict:
    return {"model": {**_AUDIO_FORM["model"], "enum": models},
            "language": {**_AUDIO_FORM["language"], "enum": sorted(LANGUAGES)}}


def audio_request(models: list[str]) -> dict:
    return {"requestBody": {"required": True, "content": multipart_body({**_AUDIO_FORM, **_choices(models)}, ("file", "model"))}}


def job_request(models: list[str]) -> dict:
    return {"requestBody": {"required": True, "content": {
        **multipart_body({**_JOB_FORM, **_choices(models)}),
        "application/json": {"schema": JobRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
    }}}


def transcript_responses() -> dict:
    """200 as JSON (json, verbose_json) or text (text, srt, vtt)."""
    return {200: {"description": "the transcript", "content": {
        "application/json": {"schema": {"anyOf": [{"$ref": "#/components/schemas/Transcription"},
                                                  {"$ref": "#/components/schemas/TranscriptionVerbose"}]}},
        "text/plain": {"schema": _TEXT}}}}
