#!/usr/bin/env bash
# What `make bench-gpu` needs on a bare lent GPU machine (Python 3.12, CUDA 13, torch; no registry), cut
# into loads of at most 50 MiB, since a device call carries 64 MiB with the working tree: .carry/1 to
# .carry/6, each named in one call's `carry`, one after another while the machine stays warm:
#   run(command="bash bench/gpu/device.sh take 1", carry=[".carry/1"])   ... the same for 2, 3, 4, 5, 6
#   run(command="bash bench/gpu/device.sh bench", timeout_s=480)
# Loads 1-2 and 6: Python 3.12 wheels of what the image lacks (6: resemblyzer, for the speaker encoder's
# weights); 3-5: the base model, its model.bin in three parts with their sha256 (device.sh checks them
# and joins the parts). The image has onnxruntime and threadpoolctl already.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >> .git/info/exclude
rm -rf .carry && mkdir -p .carry/1 .carry/2 .carry/3 .carry/4 .carry/5 .carry/6
PY=.venv/bin/python
wheels() {  # folder, then distribution names: the versions installed here, built for Python 3.12
  local into=$1 pins=() name log
  shift
  for name in "$@"; do pins+=("$name==$($PY -c "import importlib.metadata as m; print(m.version('$name'))")"); done
  log=$(mktemp)
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$into" "${pins[@]}" 2>"$log" \
    || { cat "$log" >&2; exit 1; }
}
wheels .carry/1 ctranslate2
wheels .carry/2 av silero-vad sqlalchemy alembic mako faster-whisper
wheels .carry/6 resemblyzer
model=$($PY -c "from murmur.workers.gpu.model import resolve_model; print(resolve_model('base'))")
cp "$model"/config.json "$model"/tokenizer.json "$model"/vocabulary.txt .carry/3/
size=$(stat -c %s "$model/model.bin")
part=$(( (size + 2) / 3 ))
for i in 0 1 2; do
  dd if="$model/model.bin" of=".carry/$((i + 3))/model.bin.part$i" bs=1M iflag=skip_bytes,count_bytes \
     skip=$((i * part)) count=$part status=none
done
sha256sum "$model/model.bin" | cut -d' ' -f1 > .carry/3/model.bin.sha256
du -sh .carry/* | sed 's/^/bench-gpu carry: /'
