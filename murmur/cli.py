"""The `murmur` command line: the top of the import graph, it wires the rooms below together.

`transcribe` runs the embedded pipeline in this process; `submit`, `status`
and `result` talk to a worker fleet that `worker cpu|gpu` starts; `db upgrade`
prepares its database and `prune` deletes old jobs from it; `serve` puts the
HTTP API in front of the fleet (or of this process), `keys` manages its keys;
`exporter` and `health` are for operators. Each command imports what it needs
when it runs, so `murmur --help` loads neither Celery nor a database.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from dataclasses import fields
from typing import NoReturn

from murmur.tasks.outputs.formats import FORMATS, Lines, render
from murmur.workers import cores, memory
from murmur.workers.errors import MurmurError
from murmur.workers.options import JobOptions, field_types, is_list, option_type


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"murmur: error: {message} (see murmur {self.prog.split()[-1]} --help)", file=sys.stderr)
        raise SystemExit(2)


def _add_job_options(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per job option that `command` takes, from JobOptions' own definition."""
    hints = field_types()
    for f in fields(JobOptions):
        if command not in f.metadata["commands"]:
            continue
        flag = "--" + f.name.replace("_", "-")
        choices = f.metadata["choices"]
        if hints[f.name] is bool:
            parser.add_argument(flag, action="store_true", default=None, help=f.metadata["help"])
        elif is_list(f.name):
            parser.add_argument(flag, nargs="+", metavar=f.name.upper().removeprefix("KNOWN_SPEAKER_"), help=f.metadata["help"])
        elif choices is not None:
            parser.add_argument(flag, choices=[c.value for c in choices], help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=int if option_type(f.name) is int else str, help=f.metadata["help"])


def _job_options(args: argparse.Namespace) -> dict:
    """The job options given on the command line; those not given are left to the settings and defaults.
    Reference clips are files named from here: a worker reads them by their absolute path."""
    given = {f.name: getattr(args, f.name) for f in fields(JobOptions) if getattr(args, f.name, None) is not None}
    if "known_speaker_references" in given:
        given["known_speaker_references"] = [r if "://" in r else os.path.abspath(r) for r in given["known_speaker_references"]]
    return given


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="murmur", description="Batched Whisper transcription, in one process or on a Celery worker fleet.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("transcribe", help="transcribe files in this process (no Redis, no Postgres)")
    run.add_argument("file", nargs="+", help="audio or video files, or folders of them; several are transcribed "
                                             "together, one model, their chunks in shared batches (needs --output-dir)")
    _add_job_options(run, "transcribe")
    run.add_argument("--format", choices=(*FORMATS, "all"), default="txt", help="all: txt, srt, vtt and json (with --output-dir)")
    run.add_argument("--output-dir", help="write each file's transcript to DIR/<its name>.<format> instead of stdout")
    run.add_argument("--device", help="auto, cpu or cuda (default $MURMUR_DEVICE or auto)")
    run.add_argument("--compute-type", help="auto (float16 on cuda, int8 on cpu) or a CTranslate2 type (default $MURMUR_COMPUTE_TYPE or auto)")
    run.add_argument("--threads", type=int, default=0, help="CPU threads for the model in all, and for the speaker encoder (0: every core); on CPU each thread decodes its own batch")

    submit = commands.add_parser("submit", help="queue a file (path or s3:// URI) for the workers; prints the job id")
    submit.add_argument("source")
    _add_job_options(submit, "submit")
    submit.add_argument("--callback-url", help="POSTed a JSON summary once when the job ends")
    submit.add_argument("--priority", type=int, help="0 (default, most urgent) to 9")
    submit.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar, and print its transcript")
    submit.add_argument("--format", choices=FORMATS, default="txt", help="with --wait: the transcript's format")

    status = commands.add_parser("status", help="a job's state and progress")
    status.add_argument("job")
    status.add_argument("--json", action="store_true")

    result = commands.add_parser("result", help="a finished job's transcript")
    result.add_argument("job")
    result.add_argument("--format", choices=FORMATS, default="txt")

    worker = commands.add_parser("worker", help="run a worker: cpu (prepare, assemble) or gpu (language, decode)")
    worker.add_argument("kind", choices=("cpu", "gpu"))
    worker.add_argument("--device", help="gpu worker: auto, cpu or cuda (default $MURMUR_DEVICE or auto)")
    worker.add_argument("--compute-type", help="gpu worker: auto or a CTranslate2 type (default $MURMUR_COMPUTE_TYPE or auto)")
    worker.add_argument("--threads", type=int, default=1, help="CPU threads for the model (gpu) or for the VAD's matrix products (cpu); default 1")
    worker.add_argument("--batch-size", type=int, help="gpu worker: chunks per batch, from any jobs (default $MURMUR_BATCH_SIZE or 8)")
    worker.add_argument("--concurrency", type=int, default=0, help="Celery threads (default: 2 on cpu, the batch size on gpu)")
    worker.add_argument("--loglevel", default="INFO")

    database = commands.add_parser("db", help="database administration")
    database.add_argument("action", choices=("upgrade",), help="upgrade: create the database if needed and apply the migrations")
    prune = commands.add_parser("prune", help="delete jobs that ended long ago, with their chunks and segments")
    prune.add_argument("--older-than", required=True, metavar="AGE", type=_age,
                       help="ended more than this long ago: seconds, or a number with s, m, h or d (30d)")
    exporter = commands.add_parser("exporter", help="serve the fleet's Prometheus metrics (jobs, backlog, queues, stages)")
    exporter.add_argument("--port", type=int, default=9808)
    exporter.add_argument("--address", default="127.0.0.1", help="the interface to listen on (0.0.0.0: all)")
    health = commands.add_parser("health", help="exit 0 when the database, the broker and the workers on this machine answer")
    health.add_argument("kind", nargs="?", choices=["cpu", "gpu"], help="a worker of this kind must run here")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds each check may take")
    serve = commands.add_parser("serve", help="the HTTP API: OpenAI's /v1/audio/transcriptions and /v1/jobs, over the fleet")
    serve.add_argument("--host", default="127.0.0.1", help="the interface to listen on; anything but loopback needs an API key")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--embedded", action="store_true", help="transcribe in this process (no broker; the embedded database)")
    serve.add_argument("--device", help="--embedded: auto, cpu or cuda (default $MURMUR_DEVICE or auto)")
    serve.add_argument("--compute-type", help="--embedded: auto or a CTranslate2 type (default $MURMUR_COMPUTE_TYPE or auto)")
    serve.add_argument("--threads", type=int, default=0, help="--embedded: CPU threads for the model (0: every core)")
    serve.add_argument("--loglevel", default="info")
    commands.add_parser("models", help="the models this machine can load with no network: bundled, and under MURMUR_MODEL_DIRS")
    keys = commands.add_parser("keys", help="the HTTP API's keys: create (shown once), list, delete, rotate (its webhook secret)")
    keys.add_argument("action", choices=("create", "list", "delete", "rotate"))
    keys.add_argument("name", nargs="?", help="create, delete, rotate: the key's name (an app, a team)")
    keys.add_argument("--max-jobs", type=int, help="create: jobs queued or running at once (default $MURMUR_API_MAX_JOBS)")
    keys.add_argument("--top-priority", type=int, help="create: the most urgent priority its jobs may ask (default 0: any)")
    keys.add_argument("--embedded", action="store_true", help="the keys of `murmur serve --embedded` (the embedded database)")
    return parser


def _age(text: str) -> int:
    from murmur.settings import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid age {text!r}: use {exc}") from None


def entry() -> NoReturn:
    """The `murmur` script. After `transcribe` has printed its transcript (the job is recorded,
    its temporary files gone) the process ends without tearing the interpreter down: unloading
    the model and every module took 0.11–0.17 s of an 11 s clip's 1.4 s run."""
    code = main()
    if sys.argv[1:2] == ["transcribe"]:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    memory.one_arena()  # before any thread starts
    cores.choose_waiting()  # before CTranslate2's OpenMP runtime loads
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except MurmurError as exc:
        job = getattr(exc, "job_id", None)
        print(f"murmur: error: {exc}" + (f" (job {job})" if job else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("murmur: interrupted", file=sys.stderr)
        return 130


def _transcribe(args: argparse.Namespace) -> int:
    from murmur.settings import get_settings

    files = _media_files(args.file)
    if args.output_dir or len(files) > 1:
        return _transcribe_files(args, files)
    if args.format == "all":
        raise MurmurError("--format all writes several files: give --output-dir")
    args.file = files[0]
    settings = get_settings()
    given = _job_options(args)
    _load_model_early(args, given.get("model") or settings.model)  # before the imports below (a bad request ends the process)
    from murmur.tasks import jobs
    from murmur.tasks.embedded.runner import run_submission

    submission = jobs.check(os.path.abspath(args.file), given, settings)

    lines = None if args.format == "json" else Lines(args.format)  # json is one object, printed at the end

    def release(segments) -> None:  # txt, srt and vtt are printed as the transcript is released, in order
        for line in lines.feed(segments):
            _say(line)

    with _progress() as on_progress:
        transcript = run_submission(submission, device=args.device, compute_type=args.compute_type, threads=args.threads,
                                    on_progress=on_progress, on_release=release if lines else None)
    for line in lines.finish() if lines else [render(transcript, args.format)]:
        print(line)
    return 0


MEDIA_SUFFIXES = {".aac", ".aif", ".aiff", ".amr", ".avi", ".flac", ".m4a", ".m4v", ".mka", ".mkv", ".mov", ".mp3",
                  ".mp4", ".mpeg", ".oga", ".ogg", ".opus", ".wav", ".webm", ".wma"}  # what a folder given is read for


def _media_files(names: list[str]) -> list[str]:
    """The files named, a folder's audio and video files (by suffix, sorted, not its subfolders) in its place."""
    files = []
    for name in names:
        if os.path.isdir(name):
            found = sorted(os.path.join(name, entry) for entry in os.listdir(name)
                           if os.path.splitext(entry)[1].lower() in MEDIA_SUFFIXES and os.path.isfile(os.path.join(name, entry)))
            if not found:
                raise MurmurError(f"{name}: no audio or video files in this folder")
            files += found
        else:
            files.append(name)
    return list(dict.fromkeys(files))


def _transcribe_files(args: argparse.Namespace, files: list[str]) -> int:
    """Several files in one process (`murmur.transcribe_files`), each transcript written to --output-dir as
    it is done; a file that fails is told on stderr and the others go on. The exit status is how many failed."""
    if not args.output_dir:
        raise MurmurError(f"{len(files)} files: give --output-dir for their transcripts")
    formats = FORMATS if args.format == "all" else (args.format,)
    outputs = {name: [os.path.join(args.output_dir, os.path.splitext(os.path.basename(name))[0] + "." + fmt)
                      for fmt in formats] for name in files}
    clash = _first_clash(outputs)
    if clash:
        raise MurmurError(f"{clash[0]} and {clash[1]} would both be written to {clash[2]}: give them different names")
    os.makedirs(args.output_dir, exist_ok=True)
    from murmur.tasks.embedded.files import transcribe_files

    failed = 0
    with _progress("file", "transcribing") as on_progress:
        if on_progress:
            on_progress(0, len(files))
        results = transcribe_files(files, device=args.device, compute_type=args.compute_type, threads=args.threads,
                                   **_job_options(args))
        for done, (name, result) in enumerate(results, 1):
            if isinstance(result, MurmurError):
                failed += 1
                _say(f"murmur: error: {name}: {result}", sys.stderr)
            else:
                for path, fmt in zip(outputs[name], formats):
                    with open(path, "w", encoding="utf-8") as out:
                        out.write(render(result, fmt) + "\n")
            if on_progress:
                on_progress(done, len(files))
    return min(failed, 100)


def _first_clash(outputs: dict[str, list[str]]) -> tuple[str, str, str] | None:
    """Two inputs whose outputs would have the same name (a/talk.wav and b/talk.mp3): (one, other, path)."""
    seen: dict[str, str] = {}
    for name, paths in outputs.items():
        for path in paths:
            if path in seen:
                return seen[path], name, path
            seen[path] = name
    return None


def _load_model_early(args: argparse.Namespace, model: str) -> None:
    """Start loading the model in a thread before the rest is imported: on a short clip the
    imports and the VAD take about as long as the load. The job's own ask finds it loaded
    (the same arguments as the embedded runner's `Context.model`); a name that does not load
    is left for the job's own check to report."""
    from murmur.settings import get_settings

    def load() -> None:
        from murmur.tasks.embedded.planning import job_decoders
        from murmur.workers.gpu.model import model_for

        settings = get_settings()
        device = args.device or settings.device
        try:
            concurrent = job_decoders(os.path.abspath(args.file), device, args.threads)
            model_for(model, device, args.compute_type or settings.compute_type, args.threads, concurrent,
                      None, settings.cache_dir)
        except MurmurError:
            return  # the job's own load reports it
        memory.keep_freed_blocks()

    threading.Thread(target=load, name="murmur-early-load", daemon=True).start()


def _models(args: argparse.Namespace) -> int:
    """Each model a name resolves to here, and where it comes from (a Hugging Face id needs the hub extra and a network)."""
    from murmur.settings import get_settings
    from murmur.workers.gpu.model import available_models

    for name, where in available_models(get_settings().model_dirs):
        print(f"{name}\t{where}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from murmur.tasks.fleet.client import Client
    from murmur.workers.transcript import Segment

    client = Client()
    job_id = client.submit(args.source, callback_url=args.callback_url, priority=args.priority, **_job_options(args))
    if not args.wait:
        print(job_id)
        return 0
    if args.format == "json":  # one object, at the end
        with _progress() as on_progress:
            client.wait(job_id, on_progress=on_progress)
        print(render(client.result(job_id), args.format))
        return 0
    lines = Lines(args.format)
    for item in client.stream(job_id):  # the segments as they are released, then the whole transcript
        for line in lines.feed([item]) if isinstance(item, Segment) else []:
            _say(line)
    for line in lines.finish():
        print(line)
    return 0


def _status(args: argparse.Namespace) -> int:
    from murmur.tasks.fleet.client import Client

    status = Client().status(args.job)
    if args.json:
        print(json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in vars(status).items()}))
        return 0
    line = f"{status.job_id} {status.status} {status.chunks_done}/{status.n_chunks if status.n_chunks is not None else '?'} chunks"
    if status.language:
        line += f" language={status.language}"
    if status.error:
        line += f" error: {status.error}"
    print(line)
    return 0


def _result(args: argparse.Namespace) -> int:
    from murmur.tasks.fleet.client import Client

    print(render(Client().result(args.job), args.format))
    return 0


def _worker(args: argparse.Namespace) -> int:
    if args.kind == "cpu":  # numpy's BLAS reads its thread count once, as it loads
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(max(1, args.threads or 1)))
    from murmur.settings import get_settings
    from murmur.tasks.fleet import chain, worker

    config = worker.WorkerConfig.from_settings(
        get_settings(), args.kind, device=args.device, compute_type=args.compute_type, threads=args.threads,
        batch_size=args.batch_size, concurrency=args.concurrency,
    )
    worker.run(config, chain.SENDS, args.loglevel)
    return 0


def _db(args: argparse.Namespace) -> int:
    from sqlalchemy import make_url

    from murmur.db.session import create_database, upgrade
    from murmur.settings import get_settings

    url = get_settings().fleet_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    if create_database(url):
        print(f"created database {shown}")
    upgrade(url)
    print(f"{shown} is at the latest revision")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from murmur.db.session import sessions
    from murmur.settings import get_settings
    from murmur.tasks.outputs import retention

    settings = get_settings()
    removed = retention.prune(sessions(settings.fleet_database_url), settings, timedelta(seconds=args.older_than))
    print(f"deleted {removed} job(s) that ended more than {args.older_than} s ago")
    return 0


def _exporter(args: argparse.Namespace) -> int:
    from murmur.db.session import sessions
    from murmur.settings import get_settings
    from murmur.tasks.operations.exporter import serve

    settings = get_settings()
    serve(sessions(settings.fleet_database_url), settings, args.port, args.address)
    return 0


def _health(args: argparse.Namespace) -> int:
    from murmur.settings import get_settings
    from murmur.tasks.operations.health import problems

    found = problems(get_settings(), args.kind, args.timeout)
    for problem in found:
        print(f"murmur: unhealthy: {problem}", file=sys.stderr)
    if not found:
        print("healthy")
    return 1 if found else 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from murmur.api.app import create_api
    from murmur.api.auth import LOOPBACK
    from murmur.api.runners import EmbeddedRunner, FleetRunner
    from murmur.db import queries
    from murmur.db.session import check_schema
    from murmur.settings import get_settings

    settings = get_settings()
    uploads = settings.uploads
    if settings.allowed_roots and not any(uploads.is_relative_to(root) for root in settings.allowed_roots):
        raise MurmurError(f"MURMUR_UPLOAD_DIR ({uploads}) is outside MURMUR_ALLOWED_ROOTS: the workers could not read uploads")
    if args.embedded:
        runner = EmbeddedRunner(settings, args.device, args.compute_type, args.threads)
    else:
        check_schema(settings.fleet_database_url)
        runner = FleetRunner(settings)
    public = args.host not in LOOPBACK
    if public and not queries.has_keys(runner.db):
        raise MurmurError(f"no API key exists: create one with `murmur keys create NAME{' --embedded' if args.embedded else ''}` "
                          f"before listening on {args.host} (without keys murmur serve listens on 127.0.0.1 only)")
    # A burst of requests is bounded by the server's CPU on a machine it shares with workers: httptools and
    # uvloop (C) parse and schedule uploads for less of it than h11 and asyncio, and a database call's thread,
    # woken by its reply, takes the GIL from the event loop within 1 ms instead of Python's default 5
    sys.setswitchinterval(0.001)
    uvicorn.run(create_api(runner, settings, public), host=args.host, port=args.port, log_level=args.loglevel,
                http="httptools", loop="uvloop")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from murmur.api.auth import digest, new_key, new_webhook_secret
    from murmur.db import queries
    from murmur.db.session import sessions, upgrade
    from murmur.settings import get_settings

    settings = get_settings()
    url = settings.embedded_database_url if args.embedded else settings.fleet_database_url
    if args.embedded:
        upgrade(url)
    db = sessions(url)
    if args.action == "list":
        for key in queries.list_keys(db):
            print(f"{key.name}\tcreated {key.created_at:%Y-%m-%d %H:%M}\tmax jobs {key.max_jobs or settings.api_max_jobs}"
                  f"\tpriority {key.top_priority or 0}-9\twebhooks {'own secret' if key.webhook_secret else 'MURMUR_CALLBACK_SECRET'}")
        return 0
    if not args.name:
        raise MurmurError(f"keys {args.action} needs the key's name")
    if args.action == "delete":
        if not queries.delete_key(db, args.name):
            raise MurmurError(f"no key named {args.name!r}")
        print(f"deleted key {args.name}")
        return 0
    if args.action == "rotate":
        secret = new_webhook_secret()
        if not queries.set_webhook_secret(db, args.name, secret):
            raise MurmurError(f"no key named {args.name!r}")
        print(secret)
        print(f"murmur: key {args.name!r}'s webhooks are signed with this secret from now on; it is shown only this once",
              file=sys.stderr)
        return 0
    if args.max_jobs is not None and args.max_jobs < 1:
        raise MurmurError("--max-jobs must be 1 or more")
    if args.top_priority is not None and not 0 <= args.top_priority <= 9:
        raise MurmurError("--top-priority must be 0 (most urgent) to 9")
    if any(key.name == args.name for key in queries.list_keys(db)):
        raise MurmurError(f"a key named {args.name!r} exists: delete it first, or choose another name")
    key, secret = new_key(), new_webhook_secret()
    queries.create_key(db, args.name, digest(key), args.max_jobs, secret, args.top_priority)
    print(key)
    print(f"murmur: key {args.name!r} created; it is shown only this once. Its jobs' webhooks are signed with\n"
          f"{secret}\n(shown only this once too: `murmur keys rotate {args.name}` makes a new one)", file=sys.stderr)
    return 0


_COMMANDS = {"transcribe": _transcribe, "submit": _submit, "status": _status, "result": _result, "worker": _worker, "db": _db,
             "prune": _prune, "exporter": _exporter, "health": _health,
             "serve": _serve, "keys": _keys, "models": _models}


class _progress:
    """A progress bar (of chunks, or of files) on stderr when it is a terminal; silent otherwise."""

    def __init__(self, unit: str = "chunk", desc: str = "decoding") -> None:
        self._unit, self._desc = unit, desc

    def __enter__(self):
        self._bar = None
        return self._update if sys.stderr.isatty() else None

    def _update(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            columns, lines = _terminal_size()
            self._bar = tqdm(total=total, unit=self._unit, desc=self._desc, file=sys.stderr, leave=False, ncols=columns,
                             nrows=lines)
        self._bar.n = done
        self._bar.refresh()

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


def _say(line: str, to=None) -> None:
    """A line on stdout (or `to`) now; with a progress bar on the terminal, above it (the bar is drawn again below)."""
    to = to or sys.stdout
    if sys.stderr.isatty():
        from tqdm import tqdm

        tqdm.write(line, file=to)
        to.flush()
    else:
        print(line, file=to, flush=True)


def _terminal_size() -> tuple[int, int]:
    """stderr's size; a terminal that reports 0 x 0 gets 80 x 24, else tqdm draws nothing."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        return 80, 24
    return size.columns or 80, size.lines or 24


if __name__ == "__main__":
    raise SystemExit(main())
