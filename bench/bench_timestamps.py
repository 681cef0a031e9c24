"""Segment boundaries against ground truth: the synthetic sets' per-sentence times.

For each reference sentence of tts/{en_5min,de_1min,es_1min,fr_1min} (93 in
all), the error of the nearest segment start and of the nearest segment end.
Systems: murmur embedded, murmur through the fleet (real `murmur worker`
processes on the machine's Redis and Postgres), faster-whisper sequential and
its batched pipeline with timestamps on. Every system gets the set's language,
base int8, beam 5. Also: for murmur's cues, the most silence any cue covers at
its start or its end (speech = the reference sentences), and overlaps.

Targets: ≥ 90% of the sentences with both start and end within 0.3 s, median
errors ≤ 0.1 s, on every set, embedded and distributed alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import redis

from bench_distributed import Fleet  # the fleet `make bench-distributed` starts: 1 CPU + 2 GPU-queue workers
from murmur.workers.gpu.model import resolve_model

ROOT = Path(__file__).resolve().parents[1]
AUDIO = Path(os.environ.get("MURMUR_BENCH_AUDIO", ROOT.parent / "shared" / "audio"))
BIN = Path(sys.executable).parent
SETS = ("en_5min", "de_1min", "es_1min", "fr_1min")
WITHIN = 0.3


def truth(name: str) -> list[dict]:
    return json.loads((AUDIO / "tts" / f"{name}.json").read_text())["segments"]


def errors(reference: list[dict], segments: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Per reference sentence: |nearest segment start - its start|, |nearest segment end - its end|."""
    if not segments:
        return [(float("inf"), float("inf"))] * len(reference)
    return [(min(abs(s - r["start"]) for s, _ in segments), min(abs(e - r["end"]) for _, e in segments)) for r in reference]


def silence_at_edges(reference: list[dict], segments: list[tuple[float, float]]) -> float:
    """The most silence any segment covers before its first or after its last speech."""
    worst = 0.0
    for start, end in segments:
        inside = [r for r in reference if r["end"] > start and r["start"] < end]
        if inside:
            worst = max(worst, inside[0]["start"] - start, end - inside[-1]["end"])
    return worst


def overlaps(segments: list[tuple[float, float]]) -> int:
    return sum(1 for (_, e), (s, _) in zip(segments, segments[1:]) if s < e - 1e-6)


def summary(per_set: dict[str, list[tuple[float, float]]]) -> dict:
    rows = {}
    for name, errs in {**per_set, "all": [e for errs in per_set.values() for e in errs]}.items():
        rows[name] = {
            "n": len(errs),
            "start": statistics.median(e[0] for e in errs),
            "end": statistics.median(e[1] for e in errs),
            "both": 100.0 * sum(1 for s, e in errs if s <= WITHIN and e <= WITHIN) / len(errs),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/murmur_bench")
    parser.add_argument("--no-fleet", action="store_true", help="leave out the distributed run (no Redis or Postgres needed)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    import murmur
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    files = {name: AUDIO / "tts" / f"{name}.flac" for name in SETS}
    languages = {name: truth(name)[0]["lang"] for name in SETS}
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    texts: dict[str, dict[str, list[str]]] = {}

    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="murmur-ts-")  # the embedded runs' SQLite file
    embedded = {name: murmur.transcribe(str(path), language=languages[name], device="cpu", compute_type="int8", threads=2)
                for name, path in files.items()}
    results["murmur embedded"] = {n: [(s.start, s.end) for s in t.segments] for n, t in embedded.items()}
    texts["murmur embedded"] = {n: [s.text for s in t.segments] for n, t in embedded.items()}

    if not args.no_fleet:
        env = {**os.environ, "MURMUR_BROKER_URL": args.broker_url, "MURMUR_DATABASE_URL": args.database_url,
               "MURMUR_MODEL": args.model, "MURMUR_DEVICE": "cpu", "MURMUR_COMPUTE_TYPE": "int8"}
        env.pop("MURMUR_ALLOWED_ROOTS", None)
        subprocess.run([str(BIN / "murmur"), "db", "upgrade"], env=env, check=True, capture_output=True)
        redis.Redis.from_url(args.broker_url).flushdb()
        fleet = Fleet(env, Path(tempfile.mkdtemp(prefix="murmur-ts-logs-")))
        for name, kind in (("cpu", "cpu"), ("gpu1", "gpu"), ("gpu2", "gpu")):
            fleet.start(name, kind, "--threads", "1")
        try:
            client = murmur.Client(broker_url=args.broker_url, database_url=args.database_url)
            jobs = {name: client.submit(str(path), language=languages[name]) for name, path in files.items()}
            fleet_results = {}
            for name, job in jobs.items():
                client.wait(job, timeout=1800, poll_seconds=0.05)
                fleet_results[name] = client.result(job)
        finally:
            fleet.stop_all()
        results["murmur distributed"] = {n: [(s.start, s.end) for s in t.segments] for n, t in fleet_results.items()}
        texts["murmur distributed"] = {n: [s.text for s in t.segments] for n, t in fleet_results.items()}

    fw = WhisperModel(str(resolve_model(args.model)), device="cpu", compute_type="int8", cpu_threads=2)
    batched = BatchedInferencePipeline(fw)
    fw_systems = {
        "fw sequential": lambda path, lang: fw.transcribe(str(path), language=lang, beam_size=5)[0],
        "fw batched, timestamps on": lambda path, lang: batched.transcribe(
            str(path), language=lang, beam_size=5, batch_size=8, without_timestamps=False)[0],
    }
    for system, run in fw_systems.items():
        results[system] = {n: [(s.start, s.end) for s in run(files[n], languages[n])] for n in SETS}

    table = render(results, texts, args)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"timestamps-cpu-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.md"
    path.write_text(table)
    print(f"written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", file=sys.stderr)


def render(results, texts, args) -> str:
    lines = [
        f"# Segment boundaries against the synthetic sets' sentence times — {platform.node()}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d}",
        "",
        f"model {args.model}, int8 on CPU, beam 5, language given; for each reference sentence the nearest segment "
        f"start and end; 'both' = start and end within {WITHIN} s.",
        "",
        "| system | set | sentences | median start error s | median end error s | both within 0.3 s | cue silence at edges, max s | overlaps |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for system, per_set in results.items():
        rows = summary({n: errors(truth(n), segs) for n, segs in per_set.items()})
        for name, row in rows.items():
            if name == "all":
                silence, overlap = "", ""
            else:
                silence = f"{silence_at_edges(truth(name), per_set[name]):.2f}"
                overlap = str(overlaps(per_set[name]))
            lines.append(f"| {system} | {name} | {row['n']} | {row['start']:.2f} | {row['end']:.2f} | "
                         f"{row['both']:.0f}% | {silence} | {overlap} |")
    if "murmur distributed" in texts:
        same = texts["murmur distributed"] == texts["murmur embedded"]
        lines += ["", f"Distributed and embedded segment texts identical on every set: {'yes' if same else 'no'}."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
