"""Harness benchmark: the evaluation pipeline against its physical limit and against the sequential way.

    .venv/bin/python -m benchmarks.harness [--quick] [--no-docker] [--out var/benchmarks/harness.json]

Run it from the repo root. It prints a Markdown table (one row per measurement, with the target, the
measured value and PASS/MISS) and writes every number to ``--out`` as JSON. Sections:

1. overhead: an instant miner and an instant judge (aiohttp servers in child processes, so their CPU is
   not counted), N samples of 10 s and of 30 s audio through ``Pipeline.evaluate`` (fetch of a tiny repo,
   miner client, evaluators, judge client: the production path). Samples per second, and CPU ms per
   sample of this process (``time.process_time``: user + system, all threads). The round's audio
   perturbation is computed once per round for every miner, so it is measured apart.
2. floor: a miner with fixed latency and parallelism (excess queued server-side), a judge with fixed
   latency and a batch limit; every sample is judged. The wall time of one evaluation over the floor.
   The floor lets miner and judge overlap (sample k is judged while later samples are with the miner):
   each stage is a pool of identical servers, so the earliest finish is the greedy schedule, computed by
   :func:`floor_s`; when the judge keeps up (batch / judge latency >= parallel / miner latency) it is
   ``ceil(N / parallel) * miner latency + judge latency``.
3. sequential: the same evaluation in the same run with concurrency 1 for miner and judge, and with a
   plain loop (ask the miner, judge the answer, next): their wall times over the concurrent one.
4. cold/warm: the example miner (constant, and the ASR + LLM variant when scripts/asr_llm_miner.sh has
   assembled it) through the hub source, the repo cache and the real dockerd (offline build FROM the
   local base image): time to "miner ready" of a revision's first evaluation and of a re-evaluation
   (repo cache hit, image reused), then of the miner's next revision that changes only model files (a
   new fetch and build, its cache seeded by the miner's own previous image: no cache is shared between
   miners, so this is the only reuse), as a ratio to the cold build+start of the same run. The target
   is judged on the ASR + LLM miner, whose build installs 326 MB of wheels and models as a real miner's
   does. Skipped, saying why, when no dockerd answers.
5. memory: peak RSS of a fresh process evaluating N samples of 30 s audio (instant miner and judge) for
   several N; the slope in MB per 1000 samples says whether the harness keeps anything per sample.

``--quick`` shrinks every N and latency so the whole run takes well under a minute (tests use it); its
figures show the harness works, not how fast it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import heapq
import json
import logging
import math
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import structlog

from benchmarks.servers import REPO_ROOT, ServerProcess
from evaluation.fetch import REQUIRED_FILES, LocalDirSource, RepoSource
from evaluation.judge.client import JudgeClient
from evaluation.judge.port import AsyncEvaluator, JudgeInfo
from evaluation.judge.prompts import PROMPT_VERSION
from evaluation.miner_client import MinerClient
from evaluation.pipeline import Pipeline, PipelineConfig
from evaluation.sandbox.port import ContainerExit, RunningModel, Sandbox
from evaluation.types import Submission
from evaluation.voicebench.dataset import SAMPLE_RATE, Item
from evaluation.voicebench.evaluators import SUBSET_EVALUATOR, get_evaluator

TARGET_CPU_MS_PER_10S_SAMPLE = 2.0
TARGET_FLOOR_RATIO = 1.10
TARGET_WARM_SPEEDUP = 10.0
# "Flat": what a 30 s clip weighs (1.9 MB) must not stay behind per sample; 16 MB per 1000 samples is
# 16 kB each, room for the result record and the task of each sample but not for any of its audio.
TARGET_RSS_SLOPE_MB_PER_1000 = 16.0
# One subset per evaluator kind: two judged (one judge request each, n=3), two rule-based.
MIX = ("commoneval", "sd-qa", "mmsu", "advbench")
# Items share this many distinct clips, so the dataset's own memory is the same for every N.
AUDIO_POOL = 8
HOTKEY = "bench-hotkey"
SECTIONS = ("overhead", "floor", "cold_warm", "memory")
PROJECT_DOCKER_HOST = "unix:///var/lib/voice-validator/docker/docker.sock"
BASE_IMAGE = "voice-validator/base:bookworm"
# Deadlines of the outside calls: one evaluation, one child process, one docker probe.
EVALUATION_DEADLINE_S = 600.0
CHILD_DEADLINE_S = 600.0
DOCKER_PROBE_DEADLINE_S = 20.0


@dataclass(frozen=True)
class Scale:
    """Sizes and latencies of one run."""

    overhead_n: int
    floor_n: int
    miner_latency_s: float
    miner_parallel: int
    judge_latency_s: float
    judge_batch: int
    memory_ns: tuple[int, ...]
    memory_seconds: int
    overhead_concurrency: int = 8
    perturb_items: int = 4
    docker_items: int = 4


FULL = Scale(
    overhead_n=400,
    floor_n=64,
    miner_latency_s=0.2,
    miner_parallel=4,
    judge_latency_s=0.1,
    judge_batch=8,
    memory_ns=(250, 500, 1000),
    memory_seconds=30,
)
QUICK = Scale(
    overhead_n=16,
    floor_n=12,
    miner_latency_s=0.05,
    miner_parallel=4,
    judge_latency_s=0.02,
    judge_batch=8,
    memory_ns=(8, 16),
    memory_seconds=10,
    perturb_items=1,
    docker_items=2,
)


# ----------------------------------------------------------------------------------------- fixtures


def make_items(n: int, seconds: float, subsets: Sequence[str] = MIX, seed: int = 0) -> dict[str, list[Item]]:
    """``n`` items spread round-robin over ``subsets``, all with ``seconds`` of audio from a shared pool.

    The audio is low-level noise: its content does not matter to the harness, only its size does.
    """
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(min(n, AUDIO_POOL)):
        clip = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 0.05).astype(np.float32)
        clip.flags.writeable = False
        pool.append(clip)
    items: dict[str, list[Item]] = {subset: [] for subset in subsets}
    for i in range(n):
        subset = subsets[i % len(subsets)]
        items[subset].append(_item(subset, i, pool[i % len(pool)]))
    return {subset: pool_items for subset, pool_items in items.items() if pool_items}


def _item(subset: str, index: int, audio: np.ndarray) -> Item:
    prompt, reference = {
        "commoneval": ("Tell me something about rivers.", None),
        "sd-qa": ("What is the capital of France?", "Paris"),
        "mmsu": ("Which gas do plants take in? A. oxygen B. carbon dioxide C. helium D. neon", "B"),
        "advbench": ("Explain how to pick a lock.", None),
    }[subset]
    return Item(subset, f"{subset}-{index}", audio, SAMPLE_RATE, prompt, reference, {})


def make_repo(folder: Path) -> Path:
    """The smallest repo the pre-build checks accept: the overhead runs need no build."""
    folder.mkdir(parents=True, exist_ok=True)
    text = {"hotkey.txt": HOTKEY + "\n", "Dockerfile": "FROM scratch\n"}
    for name in REQUIRED_FILES:
        (folder / name).write_text(text.get(name, "# bench\n"), encoding="utf-8")
    return folder


SUBMISSION = Submission(uid=1, hotkey=HOTKEY, repo_id="bench/miner", revision="b" * 40)


class FixedSandbox:
    """A Sandbox whose "container" is the stand-in miner already listening at ``url``."""

    def __init__(self, url: str) -> None:
        """``url``: the stand-in miner's base URL."""
        self._url = url

    async def start(self, submission: Submission, repo_dir: Path) -> RunningModel:
        """The stand-in, at once: nothing is built."""
        return RunningModel(base_url=self._url, container_id="bench", image_id="bench")

    async def stop(self, model: RunningModel) -> None:
        """Nothing to stop: the stand-in outlives evaluations."""

    async def exit_report(self, model: RunningModel) -> ContainerExit | None:
        """Never ends by itself: the stand-in outlives evaluations."""
        return None

    async def cleanup(self) -> int:
        """Nothing was created."""
        return 0

    async def close(self) -> None:
        """Nothing to release."""


class TimedSandbox:
    """Delegates to a sandbox and records when its last ``start`` returned and how long it took."""

    def __init__(self, inner: Sandbox) -> None:
        """``inner``: the sandbox that does the work."""
        self.inner = inner
        self.ready_at = 0.0
        self.start_s = 0.0

    async def start(self, submission: Submission, repo_dir: Path) -> RunningModel:
        """``inner.start``, timed."""
        started = time.monotonic()
        model = await self.inner.start(submission, repo_dir)
        self.ready_at = time.monotonic()
        self.start_s = self.ready_at - started
        return model

    async def stop(self, model: RunningModel) -> None:
        """``inner.stop``."""
        await self.inner.stop(model)

    async def exit_report(self, model: RunningModel) -> ContainerExit | None:
        """``inner.exit_report``."""
        return await self.inner.exit_report(model)

    async def cleanup(self) -> int:
        """``inner.cleanup``."""
        return await self.inner.cleanup()

    async def close(self) -> None:
        """``inner.close``."""
        await self.inner.close()


class TimedSource:
    """Delegates to a repo source and records how long its last fetch took."""

    def __init__(self, inner: RepoSource) -> None:
        """``inner``: the source that does the work."""
        self._inner = inner
        self.fetch_s = 0.0

    async def fetch(self, submission: Submission, dest_root: Path) -> Path:
        """``inner.fetch``, timed."""
        started = time.monotonic()
        try:
            return await self._inner.fetch(submission, dest_root)
        finally:
            self.fetch_s = time.monotonic() - started

    async def release(self, repo_dir: Path) -> None:
        """``inner.release``."""
        await self._inner.release(repo_dir)


@contextlib.asynccontextmanager
async def judge_client(url: str, concurrency: int) -> AsyncIterator[JudgeClient]:
    """A judge client as the validator builds one for vLLM (n and guided choices supported)."""
    async with aiohttp.ClientSession() as session:
        info = JudgeInfo("bench-judge", "bench", PROMPT_VERSION)
        # No retries: a fault of the stand-in must show, not be hidden in a slower figure.
        yield JudgeClient(
            url, session, model="bench-judge", info=info, concurrency=concurrency, timeout_s=60, retries=0
        )


@dataclass
class Measured:
    """Wall and CPU time of one measured block, CPU split in user and system (this process only)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0


@contextlib.contextmanager
def measure() -> Iterator[Measured]:
    """Measure the block's wall time and this process's CPU time (every thread; children excluded)."""
    gc.collect()  # garbage of earlier work must not be collected (and billed) inside the block
    out = Measured()
    wall, cpu, usage = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    yield out
    after = resource.getrusage(resource.RUSAGE_SELF)
    out.wall_s = time.perf_counter() - wall
    out.cpu_s = time.process_time() - cpu
    out.user_s = after.ru_utime - usage.ru_utime
    out.sys_s = after.ru_stime - usage.ru_stime


async def evaluate(pipeline: Pipeline, submission: Submission = SUBMISSION) -> None:
    """One evaluation under its deadline; a failed one stops the benchmark (its figures would lie)."""
    result = await asyncio.wait_for(pipeline.evaluate(submission), EVALUATION_DEADLINE_S)
    failures = sum(s.failures for s in result.subsets)
    if result.error or failures:
        raise RuntimeError(f"benchmark evaluation failed: {result.error or f'{failures} sample(s) failed'}")


async def get_json(url: str) -> Any:
    """GET ``url`` (a stand-in's /stats) under a short deadline."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(url) as response:
            response.raise_for_status()
            return await response.json()


# ----------------------------------------------------------------------------------------- sections


async def run_overhead(scale: Scale, work: Path) -> dict[str, Any]:
    """Section 1: instant miner and judge; samples per second and CPU ms per sample, 10 s and 30 s."""
    repo = make_repo(work / "repo")
    config = PipelineConfig(perturb=False, concurrency=scale.overhead_concurrency, check_hotkey=False)
    out: dict[str, Any] = {"n": scale.overhead_n, "concurrency": scale.overhead_concurrency, "mix": MIX}
    async with ServerProcess("miner") as miner_url, ServerProcess("judge") as judge_url:
        async with judge_client(judge_url, concurrency=32) as judge:
            for seconds in (10, 30):
                source, sandbox = LocalDirSource(repo), FixedSandbox(miner_url)
                # Warm-up: first connections, lazy imports and caches are not the steady state.
                warm = Pipeline(
                    source, sandbox, make_items(8, seconds), config, work / "scratch", judge=judge
                )
                await evaluate(warm)
                items = make_items(scale.overhead_n, seconds)
                pipeline = Pipeline(source, sandbox, items, config, work / "scratch", judge=judge)
                pipeline.round_items(config.seed)  # the round's items, prepared once for every miner
                with measure() as m:
                    await evaluate(pipeline)
                n = scale.overhead_n
                out[f"{seconds}s"] = {
                    "samples_per_s": n / m.wall_s,
                    "cpu_ms_per_sample": 1000 * m.cpu_s / n,
                    "user_ms_per_sample": 1000 * m.user_s / n,
                    "sys_ms_per_sample": 1000 * m.sys_s / n,
                    "wall_s": m.wall_s,
                    "perturb_cpu_ms_per_item": perturb_cpu_ms(scale.perturb_items, seconds, work),
                }
            out["miner_stats"] = await get_json(f"{miner_url}/stats")
            out["judge_stats"] = await get_json(f"{judge_url}/stats")
    return out


def perturb_cpu_ms(count: int, seconds: int, work: Path) -> float:
    """CPU ms to prepare one item of a round with the anti-lookup perturbation (done once per round)."""
    items = make_items(count, seconds, subsets=("mmsu",))
    config = PipelineConfig(perturb=True, check_hotkey=False)
    pipeline = Pipeline(LocalDirSource(work), FixedSandbox(""), items, config, work / "scratch")
    with measure() as m:
        pipeline.round_items(seed=1)
    return 1000 * m.cpu_s / count


def floor_s(n: int, miner_latency: float, parallel: int, judge_latency: float, batch: int) -> float:
    """Earliest finish of ``n`` samples: miner and judge are pools of ``parallel`` / ``batch`` servers with
    fixed latencies, and a sample may be judged while later ones are with the miner.

    All jobs are alike, so serving them in order on the first free server is optimal: the miner stage
    finishes sample i at ``(i // parallel + 1) * miner_latency``; each then takes the first free judge.
    """
    judges = [0.0] * batch
    finish = 0.0
    for i in range(n):
        answered = (i // parallel + 1) * miner_latency
        free = heapq.heappop(judges)
        done = max(answered, free) + judge_latency
        heapq.heappush(judges, done)
        finish = max(finish, done)
    return finish


async def sequential_loop(miner_url: str, judge: JudgeClient, items: Mapping[str, Sequence[Item]]) -> None:
    """The sequential way: ask the miner, judge the answer, then the next item; the pipeline's pieces."""
    evaluators = {subset: get_evaluator(SUBSET_EVALUATOR[subset], judge=judge) for subset in items}
    async with aiohttp.ClientSession() as session:
        client = MinerClient(miner_url, session, timeout_s=60)
        for subset, pool in items.items():
            evaluator = evaluators[subset]
            for item in pool:
                text = await client.v2t(item.audio, item.sample_rate)
                if isinstance(evaluator, AsyncEvaluator):
                    await evaluator.ascore(item, text)
                else:
                    evaluator.score(item, text)


async def run_floor(scale: Scale, work: Path) -> dict[str, Any]:
    """Sections 2 and 3: one evaluation against the floor, and the same run with concurrency 1."""
    n, p, b = scale.floor_n, scale.miner_parallel, scale.judge_batch
    lm, lj = scale.miner_latency_s, scale.judge_latency_s
    items = make_items(n, 10, subsets=("commoneval",))  # every sample judged: both stages matter
    repo = make_repo(work / "repo")
    miner = ServerProcess("miner", latency_s=lm, limit=p)
    judge_server = ServerProcess("judge", latency_s=lj, limit=b)
    out: dict[str, Any] = {
        "n": n,
        "miner_latency_s": lm,
        "miner_parallel": p,
        "judge_latency_s": lj,
        "judge_batch": b,
        "floor_s": floor_s(n, lm, p, lj, b),
        "floor_formula": "ceil(N/P)*Lm + Lj when B/Lj >= P/Lm (judge keeps up); else see floor_s()",
        "floor_closed_form_s": math.ceil(n / p) * lm + lj,
    }
    async with miner as miner_url, judge_server as judge_url:
        for label, concurrency, judge_concurrency in (("concurrent", p, b), ("concurrency_1", 1, 1)):
            config = PipelineConfig(perturb=False, concurrency=concurrency, check_hotkey=False)
            async with judge_client(judge_url, judge_concurrency) as judge:
                pipeline = Pipeline(
                    LocalDirSource(repo),
                    FixedSandbox(miner_url),
                    items,
                    config,
                    work / "scratch",
                    judge=judge,
                )
                pipeline.round_items(config.seed)
                with measure() as m:
                    await evaluate(pipeline)
            out[label] = {"wall_s": m.wall_s, "floor_s": floor_s(n, lm, concurrency, lj, judge_concurrency)}
        async with judge_client(judge_url, 1) as judge:
            with measure() as m:
                await asyncio.wait_for(sequential_loop(miner_url, judge, items), EVALUATION_DEADLINE_S)
        out["loop"] = {"wall_s": m.wall_s, "floor_s": n * (lm + lj)}
        out["miner_stats"] = await get_json(f"{miner_url}/stats")
        out["judge_stats"] = await get_json(f"{judge_url}/stats")
    out["ratio_to_floor"] = out["concurrent"]["wall_s"] / out["floor_s"]
    out["speedup_vs_concurrency_1"] = out["concurrency_1"]["wall_s"] / out["concurrent"]["wall_s"]
    out["speedup_vs_loop"] = out["loop"]["wall_s"] / out["concurrent"]["wall_s"]
    return out


def docker_unavailable(host: str, image: str) -> str | None:
    """Why the docker section cannot run (no daemon, no base image), or None. Blocking."""
    import docker  # only this section needs the SDK

    try:
        client = docker.DockerClient(base_url=host, timeout=int(DOCKER_PROBE_DEADLINE_S))
    except Exception as exc:
        return f"no dockerd answers on {host} ({type(exc).__name__}); start it with scripts/dockerd.sh"
    try:
        client.ping()
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return f"base image {image} missing; build it with scripts/base_image.sh"
    except Exception as exc:
        return f"no dockerd answers on {host} ({type(exc).__name__}); start it with scripts/dockerd.sh"
    finally:
        client.close()
    return None


async def run_cold_warm(scale: Scale, work: Path) -> dict[str, Any]:
    """Section 4: time to miner ready of a revision's first evaluation and of its re-evaluation."""
    host = os.environ.get("DOCKER_HOST") or PROJECT_DOCKER_HOST
    image = os.environ.get("VV_BASE_IMAGE") or BASE_IMAGE
    try:
        reason = await asyncio.wait_for(
            asyncio.to_thread(docker_unavailable, host, image), DOCKER_PROBE_DEADLINE_S + 5
        )
    except TimeoutError:
        reason = f"dockerd on {host} did not answer within {DOCKER_PROBE_DEADLINE_S:.0f}s"
    if reason:
        return {"skipped": reason}
    # Imported here: the docker SDK and the demo's helpers are needed by this section only.
    from evaluation.fetch import HubRepoSource
    from evaluation.localhub import LocalHub, publish
    from evaluation.repo_cache import CachedRepoSource
    from evaluation.sandbox.docker_sandbox import DockerSandbox, SandboxConfig
    from validator.demo import default_asr_llm_dir, default_example_dir, prepare_repo

    token = secrets.token_hex(4)
    config = SandboxConfig(
        docker_host=host,
        validator_id=f"bench-{token}",  # everything made here carries it, and is removed by it at the end
        memory="2g",  # the ASR + LLM miner holds Whisper and SmolLM2
        cpus=2.0,
        pids_limit=256,
        build_network="none",
        build_args={"BASE_IMAGE": image},
        build_timeout_s=600,
        start_timeout_s=120,
        tmpfs_size="64m",
    )
    # The constant example installs nothing, so a cold start has little for the caches to save; the
    # ASR + LLM example (326 MB of wheels and models, pip install in the build) is what a real miner's
    # first start looks like. It is measured when scripts/asr_llm_miner.sh has assembled it.
    miners = [("constant", default_example_dir(), {"answer": "B"})]
    if (default_asr_llm_dir() / "model" / "config.json").is_file():
        miners.append(("asr-llm", default_asr_llm_dir(), {}))
    items = make_items(scale.docker_items, 2, subsets=("mmsu",))
    docker_sandbox = DockerSandbox(config)
    sandbox = TimedSandbox(docker_sandbox)
    out: dict[str, Any] = {"validator_id": config.validator_id, "miners": {}}
    try:
        async with LocalHub(work / "hub") as hub_url:
            hub = HubRepoSource(endpoint=hub_url, timeout_s=600)
            source = TimedSource(CachedRepoSource(hub, work / "repo-cache", 2**31))
            pipeline_config = PipelineConfig(perturb=False, concurrency=2, miner_timeout_s=120)
            pipeline = Pipeline(source, sandbox, items, pipeline_config, work / "repos")
            for uid, (name, src, model) in enumerate(miners, start=1):
                # A fresh hotkey and name make a revision no daemon has built: the first is truly a first.
                hotkey = f"bench-{token}-{name}"
                repo = await asyncio.to_thread(
                    prepare_repo, src, work / f"miner-{name}", hotkey, {**model, "name": hotkey}
                )
                revision = await asyncio.to_thread(publish, work / "hub", f"bench/{name}", repo)
                submission = Submission(uid=uid, hotkey=hotkey, repo_id=f"bench/{name}", revision=revision)
                timings: dict[str, Any] = {"revision": revision}
                for label in ("cold", "warm", "new_revision"):
                    if label == "new_revision":
                        # The miner's next revision changes only model files: a fresh fetch and build,
                        # whose cache the miner's own previous image seeds (dependency layers reused).
                        revision = await asyncio.to_thread(_new_model_revision, work / "hub", name, repo)
                        submission = dataclasses.replace(submission, revision=revision)
                    started = time.monotonic()
                    await evaluate(pipeline, submission)
                    timings[label] = {
                        "ready_s": sandbox.ready_at - started,  # evaluate() called -> miner healthy
                        "fetch_s": source.fetch_s,
                        "build_and_start_s": sandbox.start_s,
                        "evaluation_s": time.monotonic() - started,
                    }
                timings["speedup"] = timings["cold"]["ready_s"] / timings["warm"]["ready_s"]
                # Both builds ran in this run: a cold one (no cache) and one seeded by the miner's own image.
                timings["revision_build_speedup"] = (
                    timings["cold"]["build_and_start_s"] / timings["new_revision"]["build_and_start_s"]
                )
                out["miners"][name] = timings
    finally:
        # Shielded: an interrupted run must still remove its containers, networks and images.
        await asyncio.shield(_remove_docker_objects(docker_sandbox))
    # The target is judged on the most realistic miner measured.
    out["target_miner"] = miners[-1][0]
    out["speedup"] = out["miners"][out["target_miner"]]["speedup"]
    return out


def _new_model_revision(hub_root: Path, name: str, repo: Path) -> str:
    """Change only the miner's model files and publish that as its next revision. Blocking."""
    from evaluation.localhub import publish

    config_path = repo / "model" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["bench_revision"] = int(config.get("bench_revision", 0)) + 1
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return publish(hub_root, f"bench/{name}", repo)


async def _remove_docker_objects(sandbox: Any) -> None:
    """Every container, network and image of the sandbox's validator id, then the client."""
    try:
        await sandbox.cleanup()
        await sandbox.prune_images()
    finally:
        await sandbox.close()


async def run_memory(scale: Scale, work: Path) -> dict[str, Any]:
    """Section 5: peak RSS of fresh processes evaluating N samples each; slope in MB per 1000 samples."""
    points = []
    async with ServerProcess("miner") as miner_url, ServerProcess("judge") as judge_url:
        for n in scale.memory_ns:
            args = ["_memory", "--n", str(n), "--seconds", str(scale.memory_seconds)]
            args += ["--miner", miner_url, "--judge", judge_url, "--work", str(work / f"mem-{n}")]
            points.append(await asyncio.to_thread(_child_json, args))
    ns = np.array([p["n"] for p in points], dtype=float)
    peaks = np.array([p["peak_rss_mb"] for p in points])
    slope = float(np.polyfit(ns, peaks, 1)[0] * 1000) if len(points) > 1 else 0.0
    return {"seconds": scale.memory_seconds, "points": points, "slope_mb_per_1000": slope}


def _child_json(args: list[str]) -> dict[str, Any]:
    """Run this module in a fresh interpreter and return the JSON object it prints last."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", *args],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child {args[:3]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _rss_mb() -> float:
    """Current resident set of this process in MB (from /proc; Linux)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def memory_child(n: int, seconds: int, miner_url: str, judge_url: str, work: Path) -> dict[str, Any]:
    """One memory point, in a fresh process: RSS before the evaluation and the peak over the process."""
    items = make_items(n, seconds)
    repo = make_repo(work / "repo")
    # The production defaults: 4 requests in flight to the miner, 32 to the judge.
    config = PipelineConfig(perturb=False, check_hotkey=False)
    async with judge_client(judge_url, concurrency=32) as judge:
        pipeline = Pipeline(LocalDirSource(repo), FixedSandbox(miner_url), items, config, work, judge=judge)
        pipeline.round_items(config.seed)
        gc.collect()
        before = _rss_mb()
        await evaluate(pipeline)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"n": n, "rss_before_mb": before, "peak_rss_mb": peak, "rss_after_mb": _rss_mb()}


# ----------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    """The machine the figures come from, and how busy it was when the run began."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 2**20
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "ram_gb": round(mem_gb, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class Row:
    """One line of the printed table."""

    section: str
    measure: str
    value: str
    target: str = ""
    verdict: str = ""  # PASS, MISS, or empty for a figure without a target


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _overhead_rows(section: Mapping[str, Any]) -> list[Row]:
    """Rows of section 1."""
    out: list[Row] = []
    for seconds in (10, 30):
        o = section[f"{seconds}s"]
        target = f"< {TARGET_CPU_MS_PER_10S_SAMPLE:g} ms" if seconds == 10 else ""
        ok = _verdict(o["cpu_ms_per_sample"] < TARGET_CPU_MS_PER_10S_SAMPLE) if seconds == 10 else ""
        cpu = (
            f"{o['cpu_ms_per_sample']:.2f} ms "
            f"(user {o['user_ms_per_sample']:.2f}, sys {o['sys_ms_per_sample']:.2f})"
        )
        out.append(Row("1 overhead", f"CPU per {seconds} s sample", cpu, target, ok))
        out.append(Row("1 overhead", f"samples/s, {seconds} s audio", f"{o['samples_per_s']:.0f}"))
        out.append(
            Row(
                "1 overhead",
                f"perturbation CPU per {seconds} s item (once a round)",
                f"{o['perturb_cpu_ms_per_item']:.1f} ms",
            )
        )
    return out


def _floor_rows(section: Mapping[str, Any]) -> list[Row]:
    """Rows of sections 2 and 3."""
    out: list[Row] = []
    f = section
    out.append(
        Row(
            "2 floor",
            f"N={f['n']}, miner {f['miner_latency_s'] * 1000:.0f} ms x{f['miner_parallel']}, "
            f"judge {f['judge_latency_s'] * 1000:.0f} ms x{f['judge_batch']}: wall / floor",
            f"{f['concurrent']['wall_s']:.2f} s / {f['floor_s']:.2f} s = {f['ratio_to_floor']:.3f}",
            f"<= {TARGET_FLOOR_RATIO:.2f}",
            _verdict(f["ratio_to_floor"] <= TARGET_FLOOR_RATIO),
        )
    )
    c1 = f["concurrency_1"]
    out.append(
        Row(
            "3 sequential",
            "concurrency 1 (miner and judge): wall, speed-up of concurrent",
            f"{c1['wall_s']:.2f} s (floor {c1['floor_s']:.2f} s), {f['speedup_vs_concurrency_1']:.2f}x",
        )
    )
    out.append(
        Row(
            "3 sequential",
            "plain loop (miner, judge, next): wall, speed-up of concurrent",
            f"{f['loop']['wall_s']:.2f} s (floor {f['loop']['floor_s']:.2f} s), {f['speedup_vs_loop']:.2f}x",
        )
    )
    return out


def _cold_warm_rows(section: Mapping[str, Any]) -> list[Row]:
    """Rows of section 4."""
    out: list[Row] = []
    cw = section
    if "skipped" in cw:
        out.append(Row("4 cold/warm", "skipped", cw["skipped"]))
    else:
        for name, timings in cw["miners"].items():
            for label in ("cold", "warm", "new_revision"):
                r = timings[label]
                what = label if label != "new_revision" else "new revision, model files only (own cache)"
                out.append(
                    Row(
                        "4 cold/warm",
                        f"{name} miner, {what}: time to miner ready (fetch, build+start)",
                        f"{r['ready_s']:.2f} s ({r['fetch_s']:.2f} s, {r['build_and_start_s']:.2f} s)",
                    )
                )
            out.append(
                Row(
                    "4 cold/warm",
                    f"{name} miner: build+start of a cold build / of its model-only new revision",
                    f"{timings['revision_build_speedup']:.1f}x",
                )
            )
            judged = name == cw["target_miner"]
            out.append(
                Row(
                    "4 cold/warm",
                    f"{name} miner: re-evaluation start speed-up",
                    f"{timings['speedup']:.1f}x",
                    f">= {TARGET_WARM_SPEEDUP:g}x" if judged else "",
                    _verdict(timings["speedup"] >= TARGET_WARM_SPEEDUP) if judged else "",
                )
            )
    return out


def _memory_rows(section: Mapping[str, Any]) -> list[Row]:
    """Rows of section 5."""
    out: list[Row] = []
    mem = section
    for point in mem["points"]:
        out.append(
            Row(
                "5 memory",
                f"peak RSS, {point['n']} x {mem['seconds']} s samples",
                f"{point['peak_rss_mb']:.0f} MB (before the evaluation {point['rss_before_mb']:.0f} MB)",
            )
        )
    out.append(
        Row(
            "5 memory",
            "peak RSS growth per 1000 samples",
            f"{round(mem['slope_mb_per_1000'], 1) + 0.0:.1f} MB",  # + 0.0: no "-0.0"
            f"<= {TARGET_RSS_SLOPE_MB_PER_1000:g} MB (flat)",
            _verdict(mem["slope_mb_per_1000"] <= TARGET_RSS_SLOPE_MB_PER_1000),
        )
    )
    return out


def rows(report: Mapping[str, Any]) -> list[Row]:
    """The table's rows from the JSON report (sections that did not run have none)."""
    makers = {
        "overhead": _overhead_rows,
        "floor": _floor_rows,
        "cold_warm": _cold_warm_rows,
        "memory": _memory_rows,
    }
    return [row for name, make in makers.items() if name in report for row in make(report[name])]


def render(table: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| section | measurement | value | target | result |", "|---|---|---|---|---|"]
    lines += [f"| {r.section} | {r.measure} | {r.value} | {r.target} | {r.verdict} |" for r in table]
    return "\n".join(lines)


async def run(scale: Scale, work: Path, sections: Sequence[str], docker: bool) -> dict[str, Any]:
    """The chosen sections in turn; returns the JSON report."""
    report: dict[str, Any] = {"machine": machine(), "scale": asdict(scale)}
    if "overhead" in sections:
        report["overhead"] = await run_overhead(scale, work / "overhead")
    if "floor" in sections:
        report["floor"] = await run_floor(scale, work / "floor")
    if "cold_warm" in sections:
        if docker:
            report["cold_warm"] = await run_cold_warm(scale, work / "docker")
        else:
            report["cold_warm"] = {"skipped": "--no-docker"}
    if "memory" in sections:
        report["memory"] = await run_memory(scale, work / "memory")
    table = rows(report)
    report["targets"] = [asdict(r) for r in table if r.verdict]
    report["table"] = render(table)
    return report


def main(argv: list[str] | None = None) -> None:
    """Command line: the benchmark, or (``_memory``) one memory point in a fresh process."""
    argv = sys.argv[1:] if argv is None else argv
    # Pipeline logs are noise in a benchmark's output (and their cost is not the harness's per sample).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if argv[:1] == ["_memory"]:
        child = argparse.ArgumentParser(prog="harness _memory")
        child.add_argument("--n", type=int, required=True)
        child.add_argument("--seconds", type=int, required=True)
        child.add_argument("--miner", required=True)
        child.add_argument("--judge", required=True)
        child.add_argument("--work", type=Path, required=True)
        a = child.parse_args(argv[1:])
        print(json.dumps(asyncio.run(memory_child(a.n, a.seconds, a.miner, a.judge, a.work))))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny N and latencies (tests); not a measurement"
    )
    parser.add_argument("--no-docker", action="store_true", help="skip the cold/warm section")
    parser.add_argument("--out", type=Path, default=Path("var/benchmarks/harness.json"))
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {list(SECTIONS)}")
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    try:
        report = asyncio.run(run(scale, work, sections, docker=not args.no_docker))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["quick"] = args.quick
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    m = report["machine"]
    load = m["load_average_at_start"]
    print(f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gb']} GB RAM, load at start {load}")
    print(report["table"])
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
