"""`murmur` command line: `murmur transcribe FILE` runs the embedded pipeline."""

from __future__ import annotations

import argparse
import os
import sys

from tasks.formats import FORMATS, render
from tasks.options import OUTPUT_LANGUAGES, TASKS, JobOptions
from workers.errors import MurmurError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"murmur: error: {message} (see murmur {self.prog.split()[-1]} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="murmur", description="Batched Whisper transcription.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("transcribe", help="transcribe a file in this process (no Redis, no Postgres)")
    run.add_argument("file")
    run.add_argument("--model", help="bundled name (base, tiny.en), CTranslate2 directory or Hugging Face id; default $MURMUR_MODEL or base")
    run.add_argument("--language", help="language code (e.g. en); default: detected over the whole file")
    run.add_argument("--multilingual", action="store_true", help="detect the language of each chunk (code-switched audio)")
    run.add_argument("--output-language", choices=OUTPUT_LANGUAGES, default="hybrid", help="with --multilingual: keep each language (hybrid) or translate to English (en)")
    run.add_argument("--task", choices=TASKS, default="transcribe")
    run.add_argument("--batch-size", type=int, help="chunks decoded together (default $MURMUR_BATCH_SIZE or 8)")
    run.add_argument("--beam-size", type=int, default=5)
    run.add_argument("--word-timestamps", action="store_true", help="include per-word times in json output")
    run.add_argument("--format", choices=FORMATS, default="txt")
    run.add_argument("--device", default=os.environ.get("MURMUR_DEVICE", "auto"), help="auto, cpu or cuda")
    run.add_argument("--compute-type", default=os.environ.get("MURMUR_COMPUTE_TYPE", "auto"), help="auto (float16 on cuda, int8 on cpu) or a CTranslate2 type")
    run.add_argument("--threads", type=int, default=0, help="CPU threads for the model in all (0: every core); on CPU each thread decodes its own batch")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _transcribe(args)
    except MurmurError as exc:
        job = getattr(exc, "job_id", None)
        print(f"murmur: error: {exc}" + (f" (job {job})" if job else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("murmur: interrupted", file=sys.stderr)
        return 130


def _transcribe(args: argparse.Namespace) -> int:
    from db.session import sessions, upgrade
    from tasks import pipeline, runner

    options = JobOptions.from_env(
        model=args.model,
        language=args.language,
        task=args.task,
        multilingual=args.multilingual,
        output_language=args.output_language,
        batch_size=args.batch_size,
        beam_size=args.beam_size,
        word_timestamps=args.word_timestamps,
    )
    upgrade()
    ctx = pipeline.Context(db=sessions(), device=args.device, compute_type=args.compute_type, threads=args.threads)
    with _progress() as on_progress:
        transcript = runner.transcribe(os.path.abspath(args.file), options, ctx=ctx, on_progress=on_progress)
    print(render(transcript, args.format))
    return 0


class _progress:
    """A chunk progress bar on stderr when it is a terminal; silent otherwise."""

    def __enter__(self):
        self._bar = None
        return self._update if sys.stderr.isatty() else None

    def _update(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            columns, lines = _terminal_size()
            self._bar = tqdm(total=total, unit="chunk", desc="decoding", file=sys.stderr, leave=False, ncols=columns, nrows=lines)
        self._bar.n = done
        self._bar.refresh()

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


def _terminal_size() -> tuple[int, int]:
    """stderr's size; a terminal that reports 0 x 0 gets 80 x 24, else tqdm draws nothing."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        return 80, 24
    return size.columns or 80, size.lines or 24


if __name__ == "__main__":
    raise SystemExit(main())
