"""Who spoke when, scored: DER of `murmur transcribe --diarize` on the dev set, and what --diarize costs a whole process.

Each file of `../shared/audio/diar` (six 30 s AMI meeting excerpts, three
conversations of real voices) runs as its own `murmur transcribe --diarize
--format json` process; the hypothesis is what a user reads, the segments'
speakers (a speaker's segments less than 0.5 s apart joined), scored against
the RTTM with pyannote.metrics: collar 0.25 s and 0 (strict), overlap scored,
per file and pooled, with its three parts. The baseline is today's output
without --diarize, every segment one speaker. Speaker counts are the
estimate's (no hint given).

The cost: whole processes with and without --diarize, alternating, on the
longest conversation and en_5min (5 minutes of four similar espeak voices).
Two runs of one command differ here by a tenth or more (other tenants' load), so
each diarized run is set against the plain runs either side of it, the verdict
is the median, and plain-against-plain pairs show the noise beside it.
Targets (issue 28): pooled DER ≤ 15%, the right count on ≥ 2/3 of files,
--diarize ≤ +15% wall.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate

ROOT = Path(__file__).resolve().parents[1]
AUDIO = Path(os.environ.get("MURMUR_BENCH_AUDIO", ROOT.parent / "shared" / "audio"))
BIN = Path(sys.executable).parent
ENV = {**os.environ, "MURMUR_THREADS": "2"}


def transcribe(path: Path, *flags: str) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "murmur"), "transcribe", str(path), "--format", "json", *flags],
                          env=ENV, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"murmur failed on {path.name}: {done.stderr[-2000:]}")
    return json.loads(done.stdout), time.perf_counter() - started


def reference(rttm: Path) -> Annotation:
    out = Annotation()
    for line in rttm.read_text().splitlines():
        parts = line.split()
        out[Segment(float(parts[3]), float(parts[3]) + float(parts[4])), len(out)] = parts[7]
    return out


def hypothesis(result: dict, one_speaker: bool = False) -> Annotation:
    out = Annotation()
    for s in result["segments"]:
        if s["end"] > s["start"]:
            out[Segment(s["start"], s["end"]), len(out)] = "S1" if one_speaker else s.get("speaker") or "?"
    return out.support(collar=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="diarized whole-process runs per file for the cost (one more plain run)")
    args = parser.parse_args()
    files = sorted((AUDIO / "diar").glob("*.flac"))
    metrics = {name: {c: DiarizationErrorRate(collar=c) for c in (0.25, 0.0)} for name in ("murmur", "baseline")}
    rows, right = [], 0
    for path in files:
        ref = reference(path.with_suffix(".rttm"))
        diarized, _ = transcribe(path, "--diarize", "--language", "en")
        plain, _ = transcribe(path, "--language", "en")
        found = len({s["speaker"] for s in diarized["segments"] if s.get("speaker")})
        right += found == len(ref.labels())
        scored = Timeline([Segment(0.0, diarized["duration"])])  # the whole file is scored
        parts = metrics["murmur"][0.25](ref, hypothesis(diarized), detailed=True, uem=scored)
        strict = metrics["murmur"][0.0](ref, hypothesis(diarized), uem=scored)
        base = metrics["baseline"][0.25](ref, hypothesis(plain, one_speaker=True), uem=scored)
        metrics["baseline"][0.0](ref, hypothesis(plain, one_speaker=True), uem=scored)
        total = parts["total"] or 1.0
        rows.append(f"| {path.stem} | {len(ref.labels())} | {found} | {parts['diarization error rate'] * 100:.1f}% "
                    f"| {strict * 100:.1f}% | {parts['confusion'] / total * 100:.1f}% | {parts['missed detection'] / total * 100:.1f}% "
                    f"| {parts['false alarm'] / total * 100:.1f}% | {base * 100:.1f}% |")
        print(rows[-1], flush=True)
    pooled = {name: {c: abs(m) * 100 for c, m in by.items()} for name, by in metrics.items()}
    detail = dict(metrics["murmur"][0.25].accumulated_)
    report = metrics["murmur"][0.25].report(display=False)
    cost_rows, costs, each, noise = [], [], [], []
    for path in (AUDIO / "diar" / "dev_conv_en_4spk_overlap.flac", AUDIO / "tts" / "en_5min.flac"):
        # plain, diarized, plain, diarized, ..., plain: each diarized run is set against the mean of the plain
        # runs either side of it, and each plain run against the one before it (the noise: both are the same run)
        plain_s = [transcribe(path, "--language", "en")[1]]
        diarized_s = []
        for _ in range(args.repeats):
            diarized_s.append(transcribe(path, "--language", "en", "--diarize")[1])
            plain_s.append(transcribe(path, "--language", "en")[1])
        pairs = [(d / ((a + b) / 2) - 1) * 100 for d, a, b in zip(diarized_s, plain_s, plain_s[1:])]
        same = [(b / a - 1) * 100 for a, b in zip(plain_s, plain_s[1:])]
        costs.append(statistics.median(pairs))
        each += pairs
        noise += same
        cost_rows.append(f"| {path.name} | {statistics.median(plain_s):.2f} s | {statistics.median(diarized_s):.2f} s "
                         f"| **{costs[-1]:+.1f}%** | {', '.join(f'{c:+.1f}%' for c in pairs)} "
                         f"| {', '.join(f'{c:+.1f}%' for c in same)} |")
        print(cost_rows[-1], flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"diarization-cpu-{stamp}.md"
    out.write_text("\n".join([
        f"# make bench-diarization, {stamp} UTC ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        "",
        "`murmur transcribe --diarize --language en --format json`, one process per file, no speaker count given;"
        " segments scored against the RTTM with pyannote.metrics (overlap scored). Baseline: the same run without"
        " --diarize, every segment one speaker.",
        "",
        "| file | speakers | found | DER (collar 0.25) | DER (collar 0) | confusion | missed | false alarm | baseline DER |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        f"| **pooled** | | {right}/{len(files)} right | **{pooled['murmur'][0.25]:.1f}%** | {pooled['murmur'][0.0]:.1f}% "
        f"| {detail.get('confusion', 0) / (detail.get('total') or 1) * 100:.1f}% "
        f"| {detail.get('missed detection', 0) / (detail.get('total') or 1) * 100:.1f}% "
        f"| {detail.get('false alarm', 0) / (detail.get('total') or 1) * 100:.1f}% | {pooled['baseline'][0.25]:.1f}% |",
        "",
        f"Targets: pooled DER ≤ 15%: {'met' if pooled['murmur'][0.25] <= 15 else 'NOT met'};"
        f" the right count on ≥ 2/3 of files: {'met' if right * 3 >= 2 * len(files) else 'NOT met'} ({right}/{len(files)}).",
        "",
        "## What --diarize costs a whole process (base int8, 2 threads)",
        "",
        "Runs alternate, plain first and last: each diarized run is set against the mean of the plain runs either side"
        " of it, and each plain run against the one before it, which shows how far two runs of one command differ here.",
        "",
        "| file | without (median) | with --diarize (median) | cost (median) | each diarized run | plain against plain |",
        "|---|---:|---:|---:|---|---|",
        *cost_rows,
        "",
        f"Target: --diarize adds ≤ 15%: {'met' if max(costs) <= 15 else 'NOT met'} on both files in this run"
        f" (medians {', '.join(f'{c:+.1f}%' for c in costs)}); every diarized run within 15%:"
        f" {'yes' if max(each) <= 15 else 'no'} (at most {max(each):+.1f}%); two plain runs differed by up to {max(map(abs, noise)):.1f}%.",
        "",
        "<details><summary>pyannote.metrics report (collar 0.25)</summary>",
        "",
        "```",
        str(report),
        "```",
        "</details>",
        "",
    ]))
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
