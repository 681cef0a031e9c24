# `make run` and `make test` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CLIP := tests/data/jfk_inaugural_1961.flac

.PHONY: setup tools run test bench bench-long bench-startup bench-timestamps bench-distributed bench-api bench-records bench-diarization bench-sharing bench-streaming bench-fleet-stream bench-files bench-keyterms bench-confidence bench-subtitles bench-voices bench-gpu bench-gpu-dry soak deploy-check deploy-check-gpu clean

# pip's -qq: errors only; a fresh machine's set-up prints nothing but what goes wrong
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	# the CPU wheel first: an unpinned torch would pull gigabytes of CUDA
	$(PY) -m pip install -qq torch==2.13.0
	$(PY) -m pip install -qq -e '.[test,bench]'
	touch $(STAMP)

setup: $(STAMP)

# what the tests need beyond Python, from Debian's packages: podman renders deploy/compose.yaml and
# builds the images, kubectl's kustomize builds deploy/k8s, chromium runs the page's tests (Playwright
# drives it; it cannot download a browser of its own here)
TOOLS_APT := podman runc uidmap kubectl chromium
tools:
	@command -v podman >/dev/null && command -v kubectl >/dev/null && command -v chromium >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y -qq $(TOOLS_APT) >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq $(TOOLS_APT) >/dev/null; }; }

run: setup
	$(VENV)/bin/murmur transcribe $(CLIP)

test: setup tools
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_embedded.py
	$(PY) bench/bench_processes.py

# whole processes on 30 min and 2 h of concatenated shared audio: peak memory as the file grows (≈10 min here)
bench-long: setup
	$(PY) bench/bench_processes.py --repeats 1 --long-minutes 30 120

# producer commands from the shell beside `celery --help` (needs the machine's Redis)
bench-startup: setup
	$(PY) bench/bench_startup.py

# segment boundaries against the synthetic sets' sentence times (Redis, Postgres, ../shared/audio)
bench-timestamps: setup
	$(PY) bench/bench_timestamps.py

# needs the machine's Redis and Postgres, and ../shared/audio
bench-distributed: setup
	$(PY) bench/bench_distributed.py

# murmur serve: twenty concurrent openai-client requests against faster-whisper (Redis, Postgres, ../shared/audio)
bench-api: setup
	$(PY) bench/bench_api.py

# a year of records in Postgres (1M jobs, 5M segments): what every tick costs (Postgres, Redis; ~10 min, ~3 GB)
bench-records: setup
	$(PY) bench/bench_records.py

# who spoke when: DER on ../shared/audio/diar (pyannote.metrics) and what --diarize costs a whole process (~8 min)
bench-diarization: setup
	$(PY) bench/bench_diarization.py

# whole processes idle and beside CPU-bound neighbours, against faster-whisper batched (~10 min)
bench-sharing: setup
	$(PY) bench/bench_sharing.py

# results as they come: a 10-minute file's first printed line and whole run, beside faster-whisper batched (~4 min)
bench-streaming: setup
	$(PY) bench/bench_streaming.py

# OpenAI's stream=true through the fleet: a 5-minute job's first delta and its end (Redis, Postgres, ~2 min)
bench-fleet-stream: setup
	$(PY) bench/bench_fleet_stream.py

# many files, one command: 24 short real clips in one process beside faster-whisper's loop (~5 min)
bench-files: setup
	$(PY) bench/bench_files.py

# custom vocabulary: keyterm recall, distractors and WER with and without a prompt, beside faster-whisper (~4 min)
bench-keyterms: setup
	$(PY) bench/bench_keyterms.py

# word confidence: the probability of words murmur gets right and wrong on the real clips (~1 min)
bench-confidence: setup
	$(PY) bench/bench_confidence.py

# subtitle timing on real speech: real clips joined with room tone, scored at each clip's speech edges (~1 min)
bench-subtitles: setup
	$(PY) bench/bench_subtitles.py

bench-voices: setup
	$(PY) bench/bench_voices.py

# on a CUDA machine: murmur embedded and cross-job batching beside faster-whisper batched, base float16, batch 16
# and 32; on a lent bare GPU machine run it through bench/gpu/carry.sh and device.sh (see carry.sh)
bench-gpu: setup
	$(PY) bench/bench_gpu.py

# the same script on this CPU with small sizes: checks it before a GPU is lent (~1 min)
bench-gpu-dry: setup
	$(PY) bench/bench_gpu.py --dry-run

# a fleet hurt on purpose (SIGKILLs, a Redis restart, a database outage); needs Postgres and ../shared/audio
soak: setup
	$(PY) bench/soak.py

# builds the CPU image with podman, runs it against this machine's Redis and Postgres (deploy/check.sh)
deploy-check: setup
	deploy/check.sh

# builds the GPU image and checks its CUDA libraries (and CUDA itself where a GPU is exposed)
deploy-check-gpu: deploy-check
	deploy/check-gpu-image.sh

clean:
	rm -rf $(VENV) .pytest_cache
