#!/usr/bin/env bash
# The whole test suite on real parts: installs what is missing, starts the project's dockerd, builds
# the local base image for test miners, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# The judge tests run a real LLM on the CPU: install llama.cpp's server and the SmolLM2 GGUF too.
VV_INSTALL_CPU_JUDGE=1 bash scripts/setup.sh
# Static checks first: they take seconds and name the exact line.
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet . || { echo "test.sh: run .venv/bin/ruff format ." >&2; exit 1; }
.venv/bin/mypy validator evaluation neurons benchmarks
export DOCKER_HOST="$(bash scripts/dockerd.sh | tail -n 1 | sed 's/^DOCKER_HOST=//')"
bash scripts/base_image.sh
# The example miner's ASR + LLM variant (wheels and models in its repo) for the demo test.
bash scripts/asr_llm_miner.sh
# Everything was just started: a Docker test that cannot find it must fail, not skip.
export VV_REQUIRE_DOCKER=1
exec .venv/bin/pytest "$@"
