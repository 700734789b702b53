#!/usr/bin/env bash
# Build the local base image that test and demo miners are built FROM (no image can be pulled here).
#
# A Debian bookworm root made by mmdebstrap with python3, numpy, fastapi and uvicorn (the constant-answer
# example miner needs nothing more) and libgomp1 (llama.cpp's OpenMP runtime, for the ASR + LLM example
# miner, whose Python packages come as wheels in its repo) and espeak-ng (the voice-to-voice example
# miner speaks its answers with it), imported into the project dockerd. The machine's own apt sources file is handed to mmdebstrap at run time, so no mirror
# address is ever written into the repository.
#
# Environment (all optional):
#   VV_BASE_IMAGE        image tag (default voice-validator/base:bookworm); skipped when it exists
#   DOCKER_HOST          daemon to import into (default: the project dockerd's socket)
#   VV_APT_SOURCES       apt sources file to use (default: the first of the machine's usual ones)
#   VV_BASE_TIMEOUT      seconds allowed for mmdebstrap (default 900)
set -euo pipefail

IMAGE="${VV_BASE_IMAGE:-voice-validator/base:bookworm}"
export DOCKER_HOST="${DOCKER_HOST:-unix:///var/lib/voice-validator/docker/docker.sock}"
TIMEOUT="${VV_BASE_TIMEOUT:-900}"
PACKAGES="python3,python3-numpy,python3-fastapi,python3-uvicorn,ca-certificates,libgomp1,espeak-ng"
# Bumped whenever PACKAGES changes, so an image built by an older version of this script is rebuilt.
BASE_VERSION=3

log() { echo "base_image.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI missing: run scripts/dockerd.sh first"
timeout 15 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "no docker daemon answers on $DOCKER_HOST: run scripts/dockerd.sh first"

existing="$(timeout 30 docker image inspect --format '{{ index .Config.Labels "voice-validator.base-version" }}' \
    "$IMAGE" 2>/dev/null || true)"
if [[ "$existing" == "$BASE_VERSION" ]]; then
    log "$IMAGE (version $BASE_VERSION) already exists; nothing to do"
    echo "$IMAGE"
    exit 0
fi
[[ -z "$existing" ]] || log "$IMAGE is outdated (version '$existing', want $BASE_VERSION): rebuilding"

if ! command -v mmdebstrap >/dev/null 2>&1; then
    [[ $EUID -eq 0 ]] || die "mmdebstrap is missing and installing it needs root"
    log "installing mmdebstrap"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y mmdebstrap
fi

sources="${VV_APT_SOURCES:-}"
if [[ -z "$sources" ]]; then
    for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [[ -s "$candidate" ]]; then
            sources="$candidate"
            break
        fi
    done
fi
[[ -n "$sources" && -s "$sources" ]] || die "no apt sources file found (set VV_APT_SOURCES)"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/vv-base.XXXXXX")"
trap 'rm -rf "$workdir"' EXIT
tarball="$workdir/rootfs.tar"

log "building $IMAGE with mmdebstrap from $sources (this takes a minute or two)"
started=$SECONDS
if ! timeout "$TIMEOUT" mmdebstrap --variant=apt --include="$PACKAGES" bookworm "$tarball" "$sources" \
    >"$workdir/mmdebstrap.log" 2>&1; then
    tail -n 30 "$workdir/mmdebstrap.log" >&2
    die "mmdebstrap failed or ran past ${TIMEOUT}s"
fi
log "root filesystem ready in $((SECONDS - started))s ($(du -h "$tarball" | cut -f1))"

timeout 600 docker import \
    --change 'CMD ["python3"]' \
    --change 'ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1' \
    --change "LABEL voice-validator.base-version=$BASE_VERSION" \
    --message "voice-validator base image (mmdebstrap bookworm)" \
    "$tarball" "$IMAGE" >/dev/null \
    || die "docker import failed"

log "imported $IMAGE in $((SECONDS - started))s"
echo "$IMAGE"
