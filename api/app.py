"""The HTTP API: OpenAI's `/v1/audio/transcriptions` and `/translations`, and `/v1/jobs` for long audio.

A request's audio is streamed to MURMUR_UPLOAD_DIR, submitted as a job to a
`Runner` (the fleet, or this process) and, for the OpenAI endpoints, waited
for. Every error is JSON in OpenAI's shape. The database is reached through
threads: the event loop only moves bytes and waits.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import mimetypes
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timezone
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager, suppress

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from murmur.api import schemas
from murmur.api.admission import MAX_STREAMS, Slots, check_origin, check_room, json_body, request_key, with_deadline
from murmur.api.auth import Caller, Callers
from murmur.api.errors import ApiError, bad_request, documented, not_found
from murmur.api.multipart import MAX_FORM_OVERHEAD, Form, read_form
from murmur.api.page import add_page
from murmur.api.runners import Runner
from murmur.api.watcher import JobWatcher
from murmur.db import queries
from murmur.db.models import ENDED, JobState, new_job_id
from murmur.settings import Settings
from murmur.tasks import jobs
from murmur.tasks.outputs import retention
from murmur.tasks.outputs.formats import render
from murmur.tasks.outputs.uploads import discard_uploads, reference_path, uploaded_file, upload_path
from murmur.workers.errors import Failure, MurmurError, ServiceUnavailable
from murmur.workers.options import PROMPT_OPTIONS, SPEAKER_OPTIONS, is_list
from murmur.workers.labels import renamed
from murmur.workers.transcript import Transcript

log = logging.getLogger("murmur")
LIST_OPTIONS = frozenset(name for name in SPEAKER_OPTIONS if is_list(name))  # a form gives each item as a field of its own
OPENAI_MODEL = "whisper-1"  # what OpenAI's clients send: the server's default model
EVENT_POLL_SECONDS = 1.0  # the longest an event stream goes without reading its job's progress


def create_api(runner: Runner, settings: Settings, public: bool = False) -> FastAPI:
    """The ASGI app over `runner`; `public`: bound to more than loopback, so a key is always required."""
    watcher = JobWatcher(runner.db)
    runner.on_end, runner.on_release = watcher.ended, watcher.released
    callers = Callers(runner.db, settings.api_max_jobs, public)
    slots = Slots()
    models = available_models(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await watcher.start(runner.database_url)
        try:
            yield
        finally:
            await watcher.stop()
            runner.close()

    api = FastAPI(title="murmur", version="1", summary="Batched Whisper transcription over a worker fleet",
                  responses=documented(400, 401), lifespan=lifespan)
    api.state.runner, api.state.watcher = runner, watcher

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where, message = _first_error(exc.errors(), skip=1)
        return JSONResponse(bad_request(f"{where or 'request'}: {message}").body(), status_code=400)

    @api.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, where Starlette names only its first route's
            headers["allow"] = ", ".join(sorted({m for r in api.routes if r.matches(request.scope)[0] == Match.PARTIAL
                                                 for m in getattr(r, "methods", ())}))
        return JSONResponse(ApiError(exc.status_code, str(exc.detail), code=code).body(), status_code=exc.status_code,
                            headers=headers)

    @api.exception_handler(DBAPIError)
    async def _database_away(request: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("the database did not answer %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(ApiError(503, "the database did not answer: nothing was done, try again", "server_error",
                                     "unavailable").body(), status_code=503)

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error answering %s %s", request.method, request.url.path)
        return JSONResponse(ApiError(500, "internal error: the server's log has the details", "server_error").body(),
                            status_code=500)

    async def caller(request: Request) -> Caller:
        header = request.headers.get("authorization")
        who = callers.identify(header, cached_only=True) or await blocking(callers.identify, header)
        check_origin(request.headers, who.keyless)
        return who

    async def own_job(request: Request, job_id: str):
        """The caller's job, or 404: another key's, and on a keyless server any key's, are not there for it."""
        who = await caller(request)
        job = await blocking(queries.get_job, runner.db, job_id) if _is_job_id(job_id) else None
        if job is None or job.owner != who.owner:
            raise not_found(f"job {job_id}")
        return job

    async def start_job(who: Caller, form: Form | None, source: str | None, options: dict, callback_url: str | None,
                        priority: int | None, job_id: str, request_key: str | None) -> str:
        """Count the key's jobs and submit, in one transaction on one thread (under load every trip waits its
        turn); the job's id: an earlier one's, for a request sent again. Nothing of a refused request is kept."""
        if priority is not None and priority < who.top_priority:
            raise bad_request(f"this key may ask for priority {who.top_priority} (most urgent) to {jobs.MAX_PRIORITY}",
                              "priority_not_allowed")

        def admit() -> str:
            try:
                return runner.submit(job_id, source, options, callback_url, priority, who.owner, who.max_jobs,
                                     request_key)
            except queries.TooManyJobs as exc:
                raise ApiError(429, f"{exc.active} of this key's jobs are queued or running (at most {who.max_jobs}): "
                               "wait for one to end", "rate_limit_exceeded", "too_many_jobs") from None
            except (ServiceUnavailable, DBAPIError) as exc:
                log.warning("a submission found the broker or the database away: %s", exc)
                raise ApiError(503, "the broker or the database did not answer: nothing was submitted, try again",
                               "server_error", "unavailable") from None
            except MurmurError as exc:
                raise bad_request(str(exc)) from None

        try:
            created = await blocking(admit)
        except ApiError:
            if form and form.file:
                discard_uploads(settings, [str(form.file)])  # with any reference clips beside it
            raise
        if created != job_id and form and form.file:
            discard_uploads(settings, [str(form.file)])  # the same request again: its first upload is the job's
        return created

    async def upload(request: Request, who: Caller, job_id: str) -> Form:
        """The multipart body, its `file` streamed to MURMUR_UPLOAD_DIR; refused before a byte is read when it
        would pass MURMUR_MAX_BYTES or leave the disk short, or when the key holds its limit in jobs and uploads."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_bytes + MAX_FORM_OVERHEAD:
            raise ApiError(413, f"the upload is larger than MURMUR_MAX_BYTES ({settings.max_bytes} bytes)",
                           code="file_too_large")
        settings.uploads.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_room(settings.uploads, int(declared) if declared and declared.isdigit() else settings.max_bytes,
                   settings.upload_min_free)
        active = await blocking(queries.active_jobs, runner.db, who.owner)
        with slots.hold("jobs and uploads", who.owner, who.max_jobs, busy=active):
            form = await read_form(request.headers.get("content-type", ""),
                                   with_deadline(request.stream(), settings.upload_timeout),
                                   lambda name: upload_path(settings, job_id, name), settings.max_bytes)
        if form.file is None:
            raise bad_request("the form has no `file` part: send the audio as `file`", "missing_file")
        return form

    async def earlier(request: Request, who: Caller) -> tuple[str | None, object]:
        """The request's Idempotency-Key record, and the job a request with it made before (or None)."""
        key = request_key(request.headers, who.owner)
        return key, (await blocking(queries.job_by_request_key, runner.db, key) if key else None)

    async def transcribe(request: Request, task: str) -> Response:
        marks = [time.perf_counter()]
        who = await caller(request)
        key = request_key(request.headers, who.owner)  # sent again: the form is read for its format, its job reused
        job_id = new_job_id()
        form = await upload(request, who, job_id)
        marks.append(time.perf_counter())
        try:
            fmt, granularities, options = _openai_options(form, task, settings)
            stream = _stream(form, fmt, task)
            _store_references(options, settings, job_id)
        except ApiError:
            discard_uploads(settings, [str(form.file)])
            raise
        job_id = await start_job(who, form, str(form.file), options, None, who.top_priority, job_id, key)
        if stream:
            deltas = _text_deltas(runner, watcher, job_id, lambda: discard_uploads(settings, [str(form.file)]))
            return StreamingResponse(deltas, media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-murmur-job": job_id})
        return await answer(job_id, form, fmt, task, granularities, marks)

    async def answer(job_id: str, form: Form | None, fmt: str, task: str, granularities: tuple[str, ...],
                     marks: list[float]) -> Response:
        """Wait for the job and answer with its transcript; the upload goes with the answer."""
        marks.append(time.perf_counter())
        upload_file = [str(form.file)] if form and form.file else []

        def outcome(state: JobState) -> Transcript:
            try:
                if state != JobState.done:
                    raise _job_error(queries.get_job(runner.db, job_id))
                return queries.get_transcript(runner.db, job_id)
            finally:
                discard_uploads(settings, upload_file)

        try:
            state = await watcher.wait(job_id)
        except BaseException:
            discard_uploads(settings, upload_file)
            raise
        marks.append(time.perf_counter())
        transcript = await blocking(outcome, state)
        marks.append(time.perf_counter())
        # where the request's time went, for operators and the bench (W3C Server-Timing)
        timing = ", ".join(f"{name};dur={(b - a) * 1000:.1f}" for name, a, b in
                           zip(("upload", "admit", "job", "answer"), marks, marks[1:]))
        return _render(transcript, fmt, task, granularities, {"x-murmur-job": job_id, "server-timing": timing})

    @api.post("/v1/audio/transcriptions", tags=["openai"], openapi_extra=schemas.audio_request(models),
              responses={**schemas.transcript_responses(), **documented(400, 401, 413, 415, 429, 500)})
    async def create_transcription(request: Request) -> Response:
        """OpenAI's transcription request: the job runs at priority 0 and the answer waits for it."""
        return await transcribe(request, "transcribe")

    @api.post("/v1/audio/translations", tags=["openai"], openapi_extra=schemas.audio_request(models),
              responses={**schemas.transcript_responses(), **documented(400, 401, 413, 415, 429, 500)})
    async def create_translation(request: Request) -> Response:
        """OpenAI's translation request: speech in any language, English text."""
        return await transcribe(request, "translate")

    @api.get("/v1/models", tags=["openai"], response_model=schemas.ModelList)
    async def list_models(request: Request) -> schemas.ModelList:
        await caller(request)
        return schemas.ModelList(data=[schemas.Model(id=name) for name in available_models(settings)])

    @api.post("/v1/jobs", tags=["jobs"], status_code=202, response_model=schemas.Job, openapi_extra=schemas.job_request(models),
              responses=documented(400, 401, 413, 415, 429))
    async def create_job(request: Request) -> schemas.Job:
        """A job for long audio: 202 at once with its id; follow it with GET /v1/jobs/{id} or its events."""
        who = await caller(request)
        key, before = await earlier(request, who)
        if before is not None and before.owner == who.owner:
            return _job_view(before)  # the same request sent again: its job, and nothing new is read
        job_id = new_job_id()
        if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
            body = _json_job(await json_body(request.stream(), request.headers.get("content-length")))
            form, source = None, body.source
            values = body.model_dump(exclude_none=True, exclude={"source"})
            if any(not r.startswith("s3://") for r in values.get("known_speaker_references", ())):
                raise bad_request("known_speaker_references: a JSON job's reference clips are s3:// URIs "
                                  "(data: URLs ride with an upload, as multipart/form-data)")
        else:
            form = await upload(request, who, job_id)
            source = str(form.file)
            try:
                values = _form_job(form)
                _store_references(values, settings, job_id)
            except ApiError:
                discard_uploads(settings, [source])
                raise
        callback_url, priority = values.pop("callback_url", None), values.pop("priority", None)
        if "model" in values:
            values["model"] = _model(values["model"], settings)
        job_id = await start_job(who, form, source, values, callback_url, priority, job_id, key)
        return _job_view(await blocking(queries.get_job, runner.db, job_id))

    @api.get("/v1/jobs", tags=["jobs"], response_model=schemas.JobList)
    async def list_jobs(request: Request, limit: int = Query(20, ge=1, le=100),
                        after: str | None = Query(None, description="a job id: the page of the jobs older than it")) -> schemas.JobList:
        """This key's jobs, newest first, a page at a time: `after` the last id of a page gives the next."""
        who = await caller(request)
        if after is not None and not _is_job_id(after):
            raise bad_request("after: a job id from the page before", "invalid_cursor")
        page = await blocking(queries.jobs_of, runner.db, who.owner, limit + 1, after)
        data = [_job_view(j) for j in page[:limit]]
        return schemas.JobList(data=data, has_more=len(page) > limit, first_id=data[0].id if data else None,
                               last_id=data[-1].id if data else None)

    @api.get("/v1/jobs/{job_id}", tags=["jobs"], response_model=schemas.Job, responses=documented(404))
    async def get_job(request: Request, job_id: str) -> schemas.Job:
        return _job_view(await own_job(request, job_id))

    @api.get("/v1/jobs/{job_id}/transcript", tags=["jobs"], responses={**schemas.transcript_responses(),
                                                                       **documented(404, 409)})
    async def get_transcript(request: Request, job_id: str,
                             format: str = Query("json", pattern=f"^({'|'.join(schemas.TRANSCRIPT_FORMATS)})$"),
                             rename: list[str] = Query([], description="LABEL:NAME, e.g. S1:Ann: a speaker shown by name")
                             ) -> Response:
        """A done job's transcript; 409 while it runs, or with its reason when it failed."""
        job = await own_job(request, job_id)
        names = _speaker_names(rename)
        if job.status != JobState.done:
            reason = f"the job failed: {job.error}" if job.status == JobState.failed else f"the job is {job.status}"
            raise ApiError(409, reason, code="job_not_done")
        transcript = renamed(await blocking(queries.get_transcript, runner.db, job_id), names)
        return _render(transcript, "text" if format == "txt" else format, job.job_options().task,
                       ("segment", "word") if job.job_options().word_timestamps else ("segment",), {})

    @api.get("/v1/jobs/{job_id}/audio", tags=["jobs"], responses={
        200: {"description": "the job's uploaded file, as it was sent",
              "content": {"audio/*": {}, "video/*": {}, "application/octet-stream": {}}},
        **documented(404)})
    async def get_audio(request: Request, job_id: str) -> Response:
        """The file uploaded for the job (to play beside its transcript); 404 for a job whose source is no upload.

        Whatever was uploaded, it is served as audio, video or bytes, as an attachment in a sandbox: an
        upload named `.html` must never run as a page of this server."""
        job = await own_job(request, job_id)
        path = uploaded_file(settings, job.source)
        if path is None:
            raise not_found(f"upload for job {job_id}")
        guessed = mimetypes.guess_type(path.name)[0] or ""
        media_type = guessed if guessed.startswith(("audio/", "video/")) else "application/octet-stream"
        return FileResponse(path, media_type=media_type, filename=path.name, headers={
            "cache-control": "private, no-store", "x-content-type-options": "nosniff",
            "content-security-policy": "default-src 'none'; sandbox"})

    @api.get("/v1/jobs/{job_id}/events", tags=["jobs"], responses={
        200: {"description": "server-sent events: `segment` for each segment as it is released (in order), `progress` on "
                             "each change, then `done` or `failed` with the job",
              "content": {"text/event-stream": {"schema": schemas.EVENT}}}, **documented(404)})
    async def job_events(request: Request, job_id: str) -> StreamingResponse:
        """Progress as server-sent events until the job ends; a key holds a few streams at once."""
        job = await own_job(request, job_id)
        events = _events(runner, watcher, job_id, request, slots.take("event streams", job.owner, MAX_STREAMS))
        first = await events.__anext__()  # started here, so its slot is given back however the stream ends
        return StreamingResponse(_then(first, events), media_type="text/event-stream", headers={"cache-control": "no-cache"})

    @api.delete("/v1/jobs/{job_id}", tags=["jobs"], response_model=schemas.Deleted, responses=documented(404))
    async def delete_job(request: Request, job_id: str) -> schemas.Deleted:
        """Delete a job with its transcript; a queued or running one is cancelled first (workers skip its chunks)."""
        job = await own_job(request, job_id)
        cancelled = False
        if job.status not in ENDED:
            cancelled = await blocking(queries.cancel_job, runner.db, job_id)
            watcher.ended(job_id)
        deleted = await blocking(queries.delete_job, runner.db, job_id)
        await blocking(retention.forget, settings, [(job.id, job.source)])
        return schemas.Deleted(id=job_id, deleted=deleted, cancelled=cancelled)

    @api.get("/healthz", tags=["operations"], include_in_schema=False)
    async def health() -> dict:
        await blocking(queries.job_states, runner.db, [])
        return {"status": "ok"}

    add_page(api)
    api.openapi = lambda: _openapi(api)
    return api


async def _job_updates(runner: Runner, watcher: JobWatcher, job_id: str) -> AsyncIterator[tuple[object, list]]:
    """The job (None once deleted) and the segments released since the last update, read at once when the
    watcher hears a chunk of it decoded or the job ended, and at least once a second; the last update is the
    one that finds it ended or gone."""
    released = 0
    with watcher.following(job_id) as news:
        while True:
            news.clear()  # what happens from here on ends the wait below
            job = await blocking(queries.get_job, runner.db, job_id)
            segments: list = []
            if job is not None:
                segments, released = await blocking(queries.released_segments, runner.db, job_id, released)
            yield job, segments
            if job is None or job.status in ENDED:
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), EVENT_POLL_SECONDS)


async def _events(runner: Runner, watcher: JobWatcher, job_id: str, request: Request,
                  give_back: Callable[[], None]) -> AsyncIterator[bytes]:
    """The jobs API's event stream: each released segment, and the job's view whenever it changes; the
    stream's slot is given back however the stream ends."""
    last = None
    async with aclosing(_job_updates(runner, watcher, job_id)) as updates:
        try:
            async for job, segments in updates:
                for segment in segments:
                    yield f"event: segment\ndata: {json.dumps(segment.to_json(), ensure_ascii=False)}\n\n".encode()
                view = _job_view(job).model_dump(mode="json") if job else None
                if view != last:
                    ended = job is None or job.status in ENDED
                    event = (job.status if job else "deleted") if ended else "progress"
                    yield f"event: {event}\ndata: {json.dumps(view)}\n\n".encode()
                    last = view
                if await request.is_disconnected():
                    return
        finally:
            give_back()


async def _text_deltas(runner: Runner, watcher: JobWatcher, job_id: str, end: Callable[[], None]) -> AsyncIterator[bytes]:
    """OpenAI's transcription stream: each released segment's text as a `transcript.text.delta` (the deltas
    joined are the text), then `transcript.text.done` with the whole text; a job that fails ends the stream
    with an error event, as OpenAI's do. `end` runs however the stream ends (the upload goes)."""
    said = False
    async with aclosing(_job_updates(runner, watcher, job_id)) as updates:
        try:
            async for job, segments in updates:
                for segment in segments:
                    yield _data({"type": "transcript.text.delta", "delta": (" " if said else "") + segment.text})
                    said = True
                if job is not None and job.status == JobState.done:
                    transcript = await blocking(queries.get_transcript, runner.db, job_id)
                    yield _data({"type": "transcript.text.done", "text": transcript.text})
                elif job is None or job.status in ENDED:
                    yield _data(_job_error(job).body())
        finally:
            end()


def _data(event: dict) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def _then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


_THREADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="murmur-api")


async def blocking(function, *args):
    """Run a database or file call on the API's threads: kept alive between bursts, where anyio's
    default threads are started anew for each burst after ten idle seconds."""
    return await asyncio.get_running_loop().run_in_executor(_THREADS, functools.partial(function, *args))


def available_models(settings: Settings) -> list[str]:
    """whisper-1 (the default model under OpenAI's name), the bundled models, and those under MURMUR_MODEL_DIRS."""
    from murmur.workers.gpu.model import available_models as installed

    return list(dict.fromkeys([OPENAI_MODEL, *(name for name, _ in installed(settings.model_dirs))]))


def _model(name: str, settings: Settings) -> str:
    if name not in available_models(settings):
        raise ApiError(400, f"model {name[:80]!r} is not available: see GET /v1/models", code="model_not_found")
    return settings.model if name == OPENAI_MODEL else name


def _openai_options(form: Form, task: str, settings: Settings) -> tuple[str, tuple[str, ...], dict]:
    """OpenAI's form fields as the job's options; what murmur cannot honour is refused, never ignored."""
    known = {"model", "language", "response_format", "temperature", "timestamp_granularities[]", "stream",
             "timestamp_granularities", *PROMPT_OPTIONS, *SPEAKER_OPTIONS,
             *(f"{name}[]" for name in SPEAKER_OPTIONS if is_list(name))}
    unknown = sorted(set(form.fields) - known)
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}", "unknown_parameter")
    model = form.get("model")
    if not model:
        raise bad_request("`model` is required: whisper-1, or a name from GET /v1/models", "missing_model")
    fmt = form.get("response_format") or "json"
    if fmt not in schemas.RESPONSE_FORMATS:
        raise bad_request(f"response_format {fmt[:40]!r} is not one of {', '.join(schemas.RESPONSE_FORMATS)}")
    temperature = form.get("temperature")
    if temperature not in (None, ""):
        try:
            if float(temperature) != 0.0:
                raise ValueError
        except ValueError:
            raise bad_request("temperature must be 0: murmur decodes with beam search at temperature 0",
                              "unsupported_parameter") from None
    granularities = tuple(form.fields.get("timestamp_granularities[]", []) + form.fields.get("timestamp_granularities", []))
    if set(granularities) - {"segment", "word"}:
        raise bad_request("timestamp_granularities[] takes segment and word")
    if granularities and fmt != "verbose_json":
        raise bad_request("timestamp_granularities[] needs response_format verbose_json")
    options: dict = {"model": _model(model, settings), "task": task}
    language = form.get("language")
    if language:
        options["language"] = language
    if "word" in granularities:
        options["word_timestamps"] = True
    options |= _form_job(form, (*PROMPT_OPTIONS, *SPEAKER_OPTIONS))
    if fmt == "diarized_json":
        if task == "translate":
            raise bad_request("response_format diarized_json is for transcriptions")
        options["diarize"] = True
    return fmt, granularities or ("segment",), options


def _stream(form: Form, fmt: str, task: str) -> bool:
    """OpenAI's `stream` field: the text as server-sent events while the job runs (json or text answers only)."""
    value = (form.get("stream") or "false").lower()
    if value not in ("true", "false"):
        raise bad_request(f"stream must be true or false, not {value[:20]!r}")
    if value == "false":
        return False
    if task == "translate":
        raise bad_request("stream is for transcriptions", "unsupported_parameter")
    if fmt not in ("json", "text"):
        raise bad_request(f"stream=true answers with text events: response_format must be json or text, not {fmt}")
    return True


def _form_job(form: Form, names: Sequence[str] | None = None) -> dict:
    """POST /v1/jobs' form fields (or those of `names` that were given), typed as JobFields types them;
    a list is its field given once per item, its name with or without OpenAI's `[]`."""
    values: dict = {}
    for name, texts in form.fields.items():
        bare = name.removesuffix("[]")
        if names is not None and (bare not in names or texts[-1] == ""):
            continue
        if bare in LIST_OPTIONS:
            values.setdefault(bare, []).extend(texts)
        else:
            values[name] = texts[-1]
    try:
        request = schemas.JobFields(**values)
    except ValidationError as exc:
        where, message = _first_error(exc.errors())
        raise bad_request(f"{where}: {message}") from None
    return request.model_dump(exclude_none=True)


def _store_references(options: dict, settings: Settings, job_id: str) -> None:
    """A multipart request's reference clips, OpenAI's data: URLs, written beside its upload (the worker reads
    them there, and they go with it); s3:// URIs are kept for the workers to fetch. A path is refused: a
    tenant names no file on the server."""
    references = options.get("known_speaker_references")
    if not references:
        return
    stored = []
    for n, reference in enumerate(references):
        if reference.startswith("s3://"):
            stored.append(reference)
            continue
        header, comma, payload = reference.partition(",")
        media_type = header.removeprefix("data:").removesuffix(";base64")
        if not (header.startswith("data:") and header.endswith(";base64") and comma):
            raise bad_request(f"known_speaker_references[{n}]: give a data: URL (data:audio/wav;base64,...) or an s3:// URI")
        try:
            clip = base64.b64decode(payload, validate=True)
        except ValueError:
            raise bad_request(f"known_speaker_references[{n}]: the data: URL is not valid base64") from None
        path = reference_path(settings, job_id, n, media_type)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(clip)
        stored.append(str(path))
    options["known_speaker_references"] = stored


def _json_job(body: bytes) -> schemas.JobRequest:
    """The JSON body, its types strict as the Celery door's (a form's are text, so read leniently)."""
    try:
        request = TypeAdapter(schemas.JobRequest).validate_json(body, strict=True)
    except ValidationError as exc:
        where, message = _first_error(exc.errors())
        where = where or "body"
        hint = ": give an s3:// URI, or upload the file as multipart/form-data" if where == "source" else ""
        raise bad_request(f"{where}: {message}{hint}") from None
    return request


def _first_error(errors: list, skip: int = 0) -> tuple[str, str]:
    """Where the first validation error is (its location, past `skip` leading parts) and what it says."""
    first = errors[0] if errors else {}
    return ".".join(str(p) for p in first.get("loc", ())[skip:]), first.get("msg", "invalid")


def _job_error(job) -> ApiError:
    """The answer for a job that did not end done, by the class of its failure."""
    if job is None:
        return bad_request("the job was deleted while it ran", "job_failed")
    if job.failure == Failure.cancelled:
        return ApiError(409, "the job was cancelled", code="job_cancelled")
    if job.failure == Failure.internal:
        return ApiError(500, _shown_error(job), "server_error", "job_failed")
    return bad_request(job.error or "the job failed", "job_failed")


SPEAKER_NAME = re.compile(r"[^\x00-\x1f\x7f<>&:]{1,40}")  # shown in VTT voice tags and "Name: " lines


def _speaker_names(pairs: list[str]) -> dict[str, str]:
    """`rename=S1:Ann` query values as {"S1": "Ann"}: a page's names for its downloads."""
    names = {}
    for pair in pairs:
        label, _, name = pair.partition(":")
        name = name.strip()
        if not SPEAKER_NAME.fullmatch(label) or not SPEAKER_NAME.fullmatch(name):
            raise bad_request(f"rename: {pair[:60]!r} is not LABEL:NAME (a speaker's label such as S1, and a name; "
                              "each 1 to 40 characters without < > & : or control characters)")
        names[label] = name
    return names


def _render(transcript: Transcript, fmt: str, task: str, granularities: tuple[str, ...], headers: dict) -> Response:
    if fmt == "json":
        return JSONResponse({"text": transcript.text}, headers=headers)
    if fmt == "diarized_json":
        body = schemas.TranscriptionDiarized(duration=transcript.duration or 0.0, text=transcript.text, segments=[
            schemas.DiarizedSegment(id=f"seg_{i}", start=s.start, end=s.end, text=s.text, speaker=s.speaker or "")
            for i, s in enumerate(transcript.segments)])
        return JSONResponse(body.model_dump(mode="json"), headers=headers)
    if fmt == "verbose_json":
        body = schemas.TranscriptionVerbose(task=task, language=transcript.language, duration=transcript.duration or 0.0,
                                            text=transcript.text)
        if "segment" in granularities:
            body.segments = [schemas.SegmentOut(id=i, seek=int(s.start * 100), start=s.start, end=s.end, text=s.text,
                                                tokens=[], temperature=0.0, avg_logprob=s.avg_logprob,
                                                compression_ratio=s.compression_ratio, no_speech_prob=s.no_speech_prob,
                                                speaker=s.speaker)
                             for i, s in enumerate(transcript.segments)]
        if "word" in granularities:
            body.words = [schemas.WordOut(word=w.text, start=w.start, end=w.end, probability=w.probability, speaker=w.speaker)
                          for s in transcript.segments for w in (s.words or ())]
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=headers)
    text = transcript.text if fmt == "text" else render(transcript, fmt)
    return PlainTextResponse(text + "\n", headers=headers)


def _shown_error(job) -> str | None:
    """A failed job's reason as a client reads it: murmur's own faults are named, not described (the
    exception, with whatever paths and values it holds, is in the worker's log under the job id)."""
    if job.failure == Failure.internal:
        return f"internal error: the server's log has the details (job {job.id})"
    return job.error


def _job_view(job) -> schemas.Job:
    return schemas.Job(id=job.id, status=str(job.status), chunks_done=job.chunks_done, chunks_total=job.n_chunks,
                       language=job.language, duration=job.duration, error=_shown_error(job), created_at=_utc(job.created_at),
                       finished_at=_utc(job.finished_at),
                       stage_seconds={"prepare": job.prepare_seconds, "detect": job.detect_seconds,
                                      "decode": job.decode_seconds})


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive times; every time the database holds is UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def _is_job_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _openapi(api: FastAPI) -> dict:
    """FastAPI's document, plus the schemas that only the hand-written bodies and answers name."""
    if api.openapi_schema is None:
        document = get_openapi(title=api.title, version=api.version, summary=api.summary, routes=api.routes)
        _, extra = models_json_schema([(m, "serialization") for m in (schemas.Transcription, schemas.TranscriptionVerbose,
                                                                     schemas.JobRequest)],
                                      ref_template="#/components/schemas/{model}")
        components = document.setdefault("components", {})
        components.setdefault("schemas", {}).update(extra.get("$defs", {}))
        components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer",
                                                    "description": "a key from `murmur keys create` (none needed on a keyless server on loopback)"}}
        document["security"] = [{"apiKey": []}]
        api.openapi_schema = document
    return api.openapi_schema
