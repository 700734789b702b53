#!/usr/bin/env bash
# One validator round on embedded defaults: a local chain, a local hub, the project's dockerd and the
# example miner in several variants. Prints each miner's score and the weights set on the local chain.
# Extra arguments go to `voice-validator demo` (settings flags included, e.g. --log-level debug).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export DOCKER_HOST="$(bash scripts/dockerd.sh | tail -n 1 | sed 's/^DOCKER_HOST=//')"
bash scripts/base_image.sh
exec .venv/bin/voice-validator demo "$@"
