"""The API's JSON answers and its multipart forms, as the OpenAPI document shows them."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from murmur.db.models import JobState
from murmur.tasks.jobs import MAX_PRIORITY
from murmur.workers.options import LANGUAGES, MAX_SPEAKERS, JobOptions, is_list, option_type

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
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
    speaker: str | None = Field(None, description="with diarization: S1, S2, ... in order of appearance, or a known speaker's name")


class WordOut(BaseModel):
    word: str
    start: float
    end: float
    probability: float = Field(description="the decoder's mean probability of the word's tokens: low where it is unsure")
    speaker: str | None = None


class DiarizedSegment(BaseModel):
    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    text: str
    speaker: str


class TranscriptionDiarized(BaseModel):
    """response_format=diarized_json, in OpenAI's shape."""

    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[DiarizedSegment]


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
    status: Literal[tuple(JobState)]  # type: ignore[valid-type]
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
    has_more: bool = Field(False, description="more jobs follow: ask again with after=last_id")
    first_id: str | None = None
    last_id: str | None = None


class Deleted(BaseModel):
    id: str
    object: Literal["job"] = "job"
    deleted: bool = Field(description="true: the job and its transcript are gone")
    cancelled: bool = Field(description="true: the job was queued or running, and was cancelled before it was deleted")


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "murmur"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def _job_fields() -> dict:
    """POST /v1/jobs' fields, made from JobOptions' own (those `murmur submit` offers), a callback URL and a
    priority. Each is typed so that a form's text reads as it should ("5", "true"); its choices and range
    are shown in the document, and checked, with every other door's values, by `tasks.jobs.check`."""
    out: dict = {}
    for f in fields(JobOptions):
        if "submit" not in f.metadata["commands"]:
            continue
        shown: dict = {}
        if f.metadata["choices"] is not None:
            shown["enum"] = [c.value for c in f.metadata["choices"]]
        if f.metadata["range"] is not None:
            shown["minimum"], shown["maximum"] = f.metadata["range"]
        kind = list[str] if is_list(f.name) else option_type(f.name) if option_type(f.name) in (bool, int) else str
        out[f.name] = (Annotated[kind, Field(json_schema_extra=shown)] | None, Field(None, description=f.metadata["help"]))
    out["callback_url"] = (str | None, Field(None, description="POSTed a signed JSON summary once when the job ends (fleet only)"))
    out["priority"] = (Annotated[int, Field(json_schema_extra={"minimum": 0, "maximum": MAX_PRIORITY})] | None,
                       Field(None, description=f"0 (default, most urgent) to {MAX_PRIORITY}"))
    return out


JobFields = create_model("JobFields", __config__=ConfigDict(extra="forbid"), __doc__="POST /v1/jobs' options, as form fields or JSON.",
                         **_job_fields())


class JobRequest(JobFields):
    """POST /v1/jobs as JSON: a source the workers fetch themselves."""

    source: str = Field(description="an s3:// URI", pattern=r"^s3://[^/]+/.+")


_TEXT = {"type": "string"}
_AUDIO_FORM = {
    "file": {"type": "string", "format": "binary", "description": "the audio or video file"},
    "model": {**_TEXT, "minLength": 1, "description": "whisper-1 (the server's MURMUR_MODEL) or a name from GET /v1/models"},
    "language": {**_TEXT, "description": "ISO 639-1 code; default: detected"},
    "prompt": {**_TEXT, "description": "text the decoder reads before each window: the names and terms spoken, spelled "
                                        "as they should be (at most 223 tokens with hotwords)"},
    "hotwords": {**_TEXT, "description": "terms to favour, read before the prompt"},
    "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": "json"},
    "temperature": {"type": "number", "description": "0 only (murmur decodes with beam search at temperature 0)"},
    "stream": {"type": "boolean", "default": False,
               "description": "transcriptions with json or text: server-sent events, a transcript.text.delta for each "
                              "segment in order as soon as it is decoded, then transcript.text.done with the whole text"},
    "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["segment", "word"]},
                                  "description": "with verbose_json: segment (default) and/or word"},
    "diarize": {"type": "boolean", "description": "label who spoke when (diarized_json implies it)"},
    **{name: {"type": "integer", "minimum": 1, "maximum": MAX_SPEAKERS, "description": f"with diarize: {what}"}
       for name, what in (("speakers", "exactly this many speakers"), ("min_speakers", "at least this many speakers"),
                          ("max_speakers", "at most this many speakers"))},
}


def _form_property(schema: dict) -> dict:
    """A JobFields property as a multipart field: its value's own schema (a form field is never null)."""
    value = next(s for s in schema["anyOf"] if s.get("type") != "null")
    return {**value, **({"description": schema["description"]} if "description" in schema else {})}


_JOB_FORM = {
    "file": _AUDIO_FORM["file"],
    **{name: _form_property(schema) for name, schema in JobFields.model_json_schema()["properties"].items()},
    "model": _AUDIO_FORM["model"],
    "language": _AUDIO_FORM["language"],
}


EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["segment", "progress", "done", "failed", "deleted"]},
    "data": {"type": "string", "description": "segment: one segment of the transcript, in order, as soon as every earlier "
                                              "chunk is decoded (README's JSON segment); the others: the job as GET "
                                              "/v1/jobs/{id} gives it, as JSON (null once deleted)"}}}


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
