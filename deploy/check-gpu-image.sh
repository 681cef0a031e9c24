#!/usr/bin/env bash
# make deploy-check-gpu: build the GPU image with podman and check that CTranslate2 finds CUDA 12's
# cuBLAS and cuDNN 9 in it; where this host exposes an NVIDIA GPU to podman (CDI), also load the
# model on CUDA and transcribe a clip. Run deploy/check.sh first: it prepares podman and the base image.
set -euo pipefail
cd "$(dirname "$0")/.."
PODMAN=(podman --runtime runc)
started=$(date +%s)
deploy/build.sh gpu localhost/murmur:gpu
echo "deploy-check-gpu: image built in $(( $(date +%s) - started )) s"
"${PODMAN[@]}" run --rm --entrypoint python localhost/murmur:gpu -c '
import ctypes, ctranslate2
for lib in ("libcublas.so.12", "libcublasLt.so.12", "libcudnn.so.9"):
    ctypes.CDLL(lib)  # found through the image LD_LIBRARY_PATH, as CTranslate2 will look them up
print("deploy-check-gpu: cuBLAS 12 and cuDNN 9 load; ctranslate2", ctranslate2.__version__,
      "sees", ctranslate2.get_cuda_device_count(), "CUDA device(s) here")'
if "${PODMAN[@]}" run --rm --device nvidia.com/gpu=all --entrypoint true localhost/murmur:gpu 2>/dev/null; then
  "${PODMAN[@]}" run --rm --device nvidia.com/gpu=all -v "$PWD/tests/data:/data:ro" localhost/murmur:gpu \
    transcribe /data/jfk_inaugural_1961.flac --device cuda
else
  echo "deploy-check-gpu: no NVIDIA GPU is exposed to podman here: CUDA itself was not tried"
fi
