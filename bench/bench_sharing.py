"""A machine shared with other work: whole processes idle, and beside CPU-bound neighbours.

`murmur transcribe` (JFK clip, en_5min) with its defaults, beside the same
command with CTranslate2's OpenMP threads left to spin as libgomp's default
does (`GOMP_SPINCOUNT=300000`, what murmur ran before), and beside
faster-whisper's BatchedInferencePipeline on the same model: first on an idle
machine, then with `--load` busy-looping processes (2 by default, as many as
this machine's cores) running the whole time. Each line alternates the three,
run by run, after one untimed run of each; wall seconds and CPU seconds (user +
system) of each process.

Targets (issue 29): loaded, JFK and en_5min no slower than faster-whisper
batched; idle, no slower than before.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_processes import AUDIO, BIN, FASTER_WHISPER, ROOT  # noqa: E402

from murmur.workers.gpu.model import resolve_model  # noqa: E402

CASES = [("11 s clip (JFK)", AUDIO / "real" / "en" / "jfk_inaugural_1961.flac"), ("en_5min", AUDIO / "tts" / "en_5min.flac")]
BUSY = "while True: pass"


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{command[0]} failed: {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy-looping processes beside each run")
    args = parser.parse_args()
    model = str(resolve_model("base"))
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    base["MURMUR_DATABASE_URL"] = "sqlite:///" + str(Path(os.environ.get("TMPDIR", "/tmp")) / "murmur-bench.db")
    kinds = {
        "murmur (defaults)": (lambda path: [str(BIN / "murmur"), "transcribe", str(path), "--language", "en"], base),
        "murmur, threads spinning (before)": (lambda path: [str(BIN / "murmur"), "transcribe", str(path), "--language", "en"],
                                              {**base, "GOMP_SPINCOUNT": "300000"}),
        "faster-whisper batched": (lambda path: [sys.executable, "-c", FASTER_WHISPER, model, str(path), "en",
                                                 str(os.cpu_count() or 2), "16"], base),
    }
    for command, env in kinds.values():  # untimed: the first process after a while reads its files from disk
        timed(command(CASES[0][1]), env)
    rows = []
    for loaded in (False, True):
        neighbours = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.load if loaded else 0)]
        try:
            for name, path in CASES:
                # spinning threads beside busy loops take minutes on a long file: that case is the clip's alone
                chosen = {k: v for k, v in kinds.items() if not (loaded and name == "en_5min" and "before" in k)}
                runs = {kind: [] for kind in chosen}
                for _ in range(args.repeats):
                    for kind, (command, env) in chosen.items():
                        runs[kind].append(timed(command(path), env))
                for kind, pairs in runs.items():
                    walls = [w for w, _ in pairs]
                    rows.append(f"| {'loaded' if loaded else 'idle'} | {name} | {kind} | {statistics.median(walls):.2f} s "
                                f"({', '.join(f'{w:.1f}' for w in walls)}) | {statistics.median(c for _, c in pairs):.1f} s "
                                f"| {', '.join(f'{fw_w / w:.2f}x' for w, (fw_w, _) in zip(walls, runs['faster-whisper batched']))} |")
                    print(rows[-1], flush=True)
        finally:
            for p in neighbours:
                p.kill()
                p.wait()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"sharing-cpu-{stamp}.md"
    out.write_text("\n".join([
        f"# make bench-sharing, {stamp} UTC ({platform.machine()}, {os.cpu_count()} CPUs; loaded: {args.load} busy loops)",
        "",
        "Whole processes, base int8, every core the process may use; each line's runs alternate with the others'.",
        "Ratio: faster-whisper batched's wall over this command's, run by run (≥ 1: faster).",
        "",
        "| machine | file | command | wall, median (runs) | CPU s | vs faster-whisper batched |",
        "|---|---|---|---|---:|---|",
        *rows,
        "",
    ]))
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
