#!/usr/bin/env bash
# make deploy-check: build the CPU image with podman, run a CPU and a GPU-queue worker container
# against this machine's Redis and Postgres, transcribe a bundled clip from the host, stop them.
# Installs what it needs (Debian packages) on a fresh machine; see DESIGN's "Containers on these machines".
set -euo pipefail
cd "$(dirname "$0")/.."
PODMAN=(podman --runtime runc)
IMAGE=localhost/murmur:cpu
BASE=localhost/debian:bookworm
BROKER=${MURMUR_CHECK_BROKER_URL:-redis://127.0.0.1:6379/13}
DATABASE=${MURMUR_CHECK_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/murmur_deploy_check}
CLIP=$PWD/tests/data/jfk_inaugural_1961.flac
started=$(date +%s)

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v mmdebstrap >/dev/null; then
  apt-get install -y -q podman runc mmdebstrap uidmap >/dev/null
fi
# this sandbox refuses podman's default ulimits
if [ ! -f /etc/containers/containers.conf ] || ! grep -q "default_ulimits" /etc/containers/containers.conf; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n' >> /etc/containers/containers.conf
fi
if ! "${PODMAN[@]}" image exists "$BASE"; then
  work=$(mktemp -d)
  mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$work/rootfs.tar"
  "${PODMAN[@]}" import "$work/rootfs.tar" "$BASE" >/dev/null
  rm -rf "$work"
fi

deploy/build.sh cpu "$IMAGE"
built=$(date +%s)
echo "deploy-check: image built in $((built - started)) s"

env=(-e "MURMUR_BROKER_URL=$BROKER" -e "MURMUR_DATABASE_URL=$DATABASE" -e "MURMUR_ALLOWED_ROOTS=$PWD/tests/data")
# no systemd here to time healthchecks: they are run by hand below
run=("${PODMAN[@]}" run --network host --health-interval disable "${env[@]}" -v "$PWD/tests/data:$PWD/tests/data:ro")
"${run[@]}" --rm "$IMAGE" db upgrade
"${PODMAN[@]}" rm -f murmur-check-cpu murmur-check-gpu murmur-check-gpu2 >/dev/null 2>&1 || true  # an earlier run's
containers=()
cleanup() { for c in "${containers[@]}"; do "${PODMAN[@]}" rm -f "$c" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
containers+=("$("${run[@]}" -d --name murmur-check-cpu "$IMAGE" worker cpu)")
containers+=("$("${run[@]}" -d --name murmur-check-gpu -e MURMUR_DEVICE=cpu "$IMAGE" worker gpu)")
for c in murmur-check-cpu murmur-check-gpu; do
  for _ in $(seq 120); do "${PODMAN[@]}" logs "$c" 2>&1 | grep -q " ready." && break; sleep 1; done
  "${PODMAN[@]}" healthcheck run "$c"  # the image's HEALTHCHECK: database, broker, its own worker
done

transcript=$(MURMUR_BROKER_URL=$BROKER MURMUR_DATABASE_URL=$DATABASE .venv/bin/murmur submit --wait "$CLIP" --language en)
echo "$transcript"
echo "$transcript" | tr 'A-Z\n' 'a-z ' | tr -s ' ' | grep -q "ask not what your country can do for you" \
  || { echo "deploy-check: the transcript is not JFK's" >&2; exit 1; }
# SIGTERM mid-decode: the GPU-queue worker's warm shutdown ends the batch in hand and exits 0; a
# new container takes the rest of the job
murmur=(env MURMUR_BROKER_URL="$BROKER" MURMUR_DATABASE_URL="$DATABASE" .venv/bin/murmur)
long=$("${murmur[@]}" submit "$PWD/tests/data/en_5min.flac" --language en)
progress() { "${murmur[@]}" status --json "$long" | .venv/bin/python -c "import json,sys; s=json.load(sys.stdin); print(s['status'], s['chunks_done'], s['n_chunks'])"; }
for _ in $(seq 600); do read -r state done total < <(progress); [ "$done" -ge 1 ] && break; sleep 0.2; done
[ "$done" -ge 1 ] || { echo "deploy-check: the long job made no progress: $state $done/$total" >&2; exit 1; }
echo "deploy-check: stopping the GPU-queue worker at $done/$total chunks"
"${PODMAN[@]}" stop -t 120 murmur-check-gpu >/dev/null
code=$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' murmur-check-gpu)
[ "$code" = 0 ] || { echo "deploy-check: the GPU-queue worker exited with $code on SIGTERM" >&2; exit 1; }
# (the log is read whole first: grep -q would close the pipe early, and pipefail call that a failure)
stopped_log=$("${PODMAN[@]}" logs murmur-check-gpu 2>&1)
grep -q "Warm shutdown" <<<"$stopped_log" || { echo "deploy-check: no warm shutdown in the log" >&2; exit 1; }
containers+=("$("${run[@]}" -d --name murmur-check-gpu2 -e MURMUR_DEVICE=cpu "$IMAGE" worker gpu)")
for _ in $(seq 300); do read -r state done total < <(progress); [ "$state" = done ] || [ "$state" = failed ] && break; sleep 1; done
[ "$state" = done ] && [ "$done" = "$total" ] || { echo "deploy-check: the long job ended $state at $done/$total" >&2; exit 1; }
echo "deploy-check: the long job finished on the new container ($total chunks)"

for c in murmur-check-cpu murmur-check-gpu2; do
  "${PODMAN[@]}" stop -t 60 "$c" >/dev/null  # SIGTERM: warm shutdown
  code=$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$c")
  [ "$code" = 0 ] || { echo "deploy-check: $c exited with $code" >&2; "${PODMAN[@]}" logs "$c" | tail -20; exit 1; }
done
echo "deploy-check: passed in $(( $(date +%s) - started )) s (build $((built - started)) s)"
