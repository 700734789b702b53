#!/usr/bin/env bash
# Run the GPU judge from vLLM's official image, for operators who prefer a container to a separate vLLM
# virtualenv. The validator then only attaches to it (evaluation.judge.server.attach) at
#   http://127.0.0.1:${VV_JUDGE_PORT}/v1
# Nothing in the test suite needs this script.
#
# Settings (environment):
#   VV_JUDGE_IMAGE      image to run; pin a release tag rather than "latest" so results stay reproducible
#   VV_JUDGE_MODEL      default: the same model as evaluation.judge.server.DEFAULT_VLLM_MODEL
#   VV_JUDGE_REVISION   model commit sha (recommended: every judged score records it)
#   VV_JUDGE_PORT       loopback port (default 8011)
#   VV_JUDGE_GPU        GPU index or comma-separated indices (default 0)
#   VV_JUDGE_GPU_MEMORY_UTILIZATION  share of the card vLLM claims for weights + KV cache (default 0.3:
#                       the rest stays free for miner containers; vLLM refuses to start if that much
#                       is not free when it starts)
#   VV_JUDGE_MAX_MODEL_LEN  longest prompt + answer in tokens (default 4096)
#   VV_JUDGE_HF_CACHE   host folder for the model weights (default ~/.cache/voice-validator/judge-hf)
#   VV_JUDGE_CONTAINER  container name (default vv-judge)
#   HF_TOKEN            passed through only if set (the default model is public)
#   DOCKER              docker command (default docker), e.g. "docker -H unix:///path/to/docker.sock"
set -euo pipefail

image="${VV_JUDGE_IMAGE:-vllm/vllm-openai:latest}"
model="${VV_JUDGE_MODEL:-Qwen/Qwen2.5-14B-Instruct-AWQ}"
revision="${VV_JUDGE_REVISION:-}"
port="${VV_JUDGE_PORT:-8011}"
gpu="${VV_JUDGE_GPU:-0}"
mem="${VV_JUDGE_GPU_MEMORY_UTILIZATION:-0.3}"
max_len="${VV_JUDGE_MAX_MODEL_LEN:-4096}"
hf_cache="${VV_JUDGE_HF_CACHE:-$HOME/.cache/voice-validator/judge-hf}"
name="${VV_JUDGE_CONTAINER:-vv-judge}"
read -r -a docker_cmd <<< "${DOCKER:-docker}"

# A cache of its own: miner evaluation wipes or quarantines the caches it uses, and the judge's ~10 GB
# of weights should survive that (and never be readable by a miner container).
mkdir -p "$hf_cache"

# Arguments for vLLM's OpenAI server. "--model" works with both the older image entrypoint
# (python -m vllm.entrypoints.openai.api_server) and the newer one (vllm serve).
args=(
    --model "$model"
    --host 127.0.0.1
    --port "$port"
    --gpu-memory-utilization "$mem"
    --max-model-len "$max_len"
)
if [[ -n "$revision" ]]; then
    args+=(--revision "$revision")
fi

env_args=(-e VLLM_NO_USAGE_STATS=1 -e DO_NOT_TRACK=1)  # vLLM reports usage statistics unless told not to
if [[ -n "${HF_TOKEN:-}" ]]; then
    env_args+=(-e HF_TOKEN)  # by name only: the value never appears in the process list
fi

# --network host + --host 127.0.0.1: the server listens on the host's loopback only. Publishing a port
# from a bridge network instead ("-p 127.0.0.1:P:P") would still leave the container's own bridge address
# reachable from miner containers on that bridge, and a miner could then probe or flood its own judge.
# --shm-size: PyTorch workers exchange tensors through shared memory; the default 64 MB is too small
# (vLLM's documentation suggests this or --ipc=host, which would share the host's IPC namespace).
# --gpus '"device=..."': the inner quotes let docker accept a comma-separated list of indices.
exec "${docker_cmd[@]}" run --rm \
    --name "$name" \
    --network host \
    --gpus "\"device=${gpu}\"" \
    --shm-size 2g \
    -v "${hf_cache}:/root/.cache/huggingface" \
    "${env_args[@]}" \
    "$image" \
    "${args[@]}"
