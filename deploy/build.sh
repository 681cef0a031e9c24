#!/usr/bin/env bash
# deploy/build.sh TARGET TAG: build one target of deploy/docker/Dockerfile with podman on this machine.
# pip inside the build goes through this machine's TLS proxy (its CA bundle) and takes the local
# CPU torch wheel from pip's find-links directory, where the machine has one. The Debian base is
# localhost/debian:bookworm, which deploy/check.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
build=(--build-arg "BASE=localhost/debian:bookworm")
cert=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
[ -n "$cert" ] && build+=(-v "$cert:/etc/ssl/certs/proxy-ca.crt:ro" --build-arg "PIP_CERT=/etc/ssl/certs/proxy-ca.crt")
wheels=${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}
if [ -n "$wheels" ] && ls "$wheels"/torch-2.13.0* >/dev/null 2>&1; then
  build+=(-v "$wheels:/wheels:ro" --build-arg "TORCH_SOURCE=--find-links /wheels")
fi
# docker format: OCI images drop HEALTHCHECK
podman --runtime runc build -q --format docker -f deploy/docker/Dockerfile --target "$1" "${build[@]}" -t "$2" .
