#!/usr/bin/env bash
# One validator round on embedded defaults: a local chain, a local hub, the project's dockerd, the CPU
# judge and the example miner in several variants (one answers with Whisper + SmolLM2). Prints each
# miner's score on the nine VoiceBench columns and the weights set on the local chain. The first run
# on a machine compiles llama.cpp (minutes); later runs take about three minutes on two cores.
# Extra arguments go to `voice-validator demo` (settings flags included, e.g. --log-level debug).
set -euo pipefail
cd "$(dirname "$0")/.."

VV_INSTALL_CPU_JUDGE=1 bash scripts/setup.sh
export DOCKER_HOST="$(bash scripts/dockerd.sh | tail -n 1 | sed 's/^DOCKER_HOST=//')"
bash scripts/base_image.sh
bash scripts/asr_llm_miner.sh
exec .venv/bin/voice-validator demo "$@"
