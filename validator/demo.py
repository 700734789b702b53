"""The quick-start job: a whole validator round on embedded defaults, on this machine.

A local file-backed chain, a local hub on 127.0.0.1, the project's dockerd, the CPU judge and the example
miner in a few variants (one that really answers with speech recognition and a small LLM, a
constant-answer baseline, a copy, a malformed commitment): miners register and commit, the daemon
evaluates each in its container on all nine VoiceBench columns, sets weights on the local chain, and
tables show what happened.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import structlog

from evaluation.localhub import LocalHub, publish
from evaluation.voicebench.subsets import SUBSETS
from validator.app import open_app
from validator.chain.local import LocalChain
from validator.chain.port import RawCommitment
from validator.commitments import format_commitment, submissions_from_chain
from validator.settings import Settings
from validator.store import Store
from validator.table import render_table

log = structlog.get_logger(__name__)

# Substrate's well-known development accounts: public, and recognisable to anyone who used a dev chain.
VALIDATOR_HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"  # //Alice
LOCAL_BASE_IMAGE = "voice-validator/base:bookworm"  # built by scripts/base_image.sh
DEMO_SAMPLES_PER_SUBSET = 4  # 36 questions in all: a few minutes on two CPU cores
CHARLIE_HOTKEY = "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y"  # //Charlie


@dataclass(frozen=True)
class DemoMiner:
    """One scripted miner of the demo and what it commits."""

    hotkey: str
    repo_id: str
    kind: Literal["asr-llm", "constant"]
    answer: str = "A"  # the constant model's answer
    repo_hotkey: str | None = None  # hotkey.txt content when it differs from ``hotkey`` (a copied repo)
    raw_commitment: str | None = None  # commit this string instead of a valid one


DEMO_MINERS = (
    # Bob runs the example miner that really answers: Whisper tiny.en, then SmolLM2-135M.
    DemoMiner("5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty", "bob/asr-llm", "asr-llm"),  # //Bob
    DemoMiner(CHARLIE_HOTKEY, "charlie/voice-b", "constant", "B"),
    # Dave re-uploads Charlie's repo under his own name, hotkey.txt and all: rejected before any build.
    DemoMiner(
        "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy",  # //Dave
        "dave/voice-copy",
        "constant",
        "B",
        repo_hotkey=CHARLIE_HOTKEY,
    ),
    # Eve commits something that is not a commitment at all: logged and skipped.
    DemoMiner(
        "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw",  # //Eve
        "eve/voice",
        "constant",
        raw_commitment="eve/voice@main please evaluate me",
    ),
)


class DemoError(RuntimeError):
    """The demo cannot run on this machine; the message says what to do."""


def default_example_dir() -> Path:
    """The example miner shipped in this repository."""
    return Path(__file__).resolve().parents[1] / "docker" / "example_miner"


def default_asr_llm_dir() -> Path:
    """Where ``scripts/asr_llm_miner.sh`` assembles the example miner's ASR + LLM variant."""
    return Path(__file__).resolve().parents[1] / "var" / "asr-llm-miner"


def prepare_repo(example_dir: Path, out_dir: Path, hotkey_txt: str, model_config: dict[str, object]) -> Path:
    """Copy the example miner to ``out_dir`` with its own hotkey.txt and model settings merged in."""
    shutil.copytree(example_dir, out_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (out_dir / "hotkey.txt").write_text(hotkey_txt + "\n", encoding="utf-8")
    config_path = out_dir / "model" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(model_config)
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out_dir


def seed_chain(
    chain: LocalChain,
    netuid: int,
    hub_root: Path,
    work: Path,
    sources: dict[str, Path],
    competition: str,
) -> None:
    """Register the validator and the demo miners, publish their repos and commit them.

    ``sources`` maps each miner kind to the repo folder it is copied from.
    """
    chain.register(netuid, VALIDATOR_HOTKEY)
    for miner in DEMO_MINERS:
        chain.register(netuid, miner.hotkey)
        model: dict[str, object] = {"name": miner.repo_id.split("/")[1]}
        if miner.kind == "constant":
            model["answer"] = miner.answer
        repo = prepare_repo(
            sources[miner.kind],
            work / miner.repo_id.replace("/", "__"),
            miner.repo_hotkey or miner.hotkey,
            model,
        )
        revision = publish(hub_root, miner.repo_id, repo)
        value = miner.raw_commitment or format_commitment(miner.repo_id, revision, competition=competition)
        chain.commit(netuid, miner.hotkey, value)


def demo_sources(example_dir: Path | None, asr_llm_dir: Path | None) -> dict[str, Path]:
    """The repo folder of each miner kind, checked to exist, with what to run when one does not."""
    sources = {
        "constant": example_dir or default_example_dir(),
        "asr-llm": asr_llm_dir or default_asr_llm_dir(),
    }
    if not (sources["constant"] / "Dockerfile").is_file():
        raise DemoError(f"example miner not found at {sources['constant']}")
    if not (sources["asr-llm"] / "model" / "config.json").is_file():
        raise DemoError(
            f"the ASR + LLM example miner is not assembled at {sources['asr-llm']}: run "
            "`VV_INSTALL_CPU_JUDGE=1 bash scripts/setup.sh && bash scripts/asr_llm_miner.sh` "
            "(or `bash scripts/quickstart.sh`, which does both)"
        )
    return sources


async def run_demo(
    settings: Settings,
    out: TextIO,
    *,
    example_dir: Path | None = None,
    asr_llm_dir: Path | None = None,
    samples_per_subset: int = DEMO_SAMPLES_PER_SUBSET,
    timeout_s: float = 900.0,
) -> int:
    """Run the demo round and print its result tables. Returns a process exit code."""
    sources = demo_sources(example_dir, asr_llm_dir)
    demo_dir = settings.data_dir / "demo"
    await asyncio.to_thread(shutil.rmtree, demo_dir, True)
    hub_root, work = demo_dir / "hub", demo_dir / "work"
    work.mkdir(parents=True)
    chain_file = demo_dir / "chain.json"

    async with LocalHub(hub_root) as hub_url:
        demo_settings = settings.model_copy(
            update={
                "chain": "local",
                "hub_endpoint": hub_url,
                "local_chain_file": chain_file,
                "validator_hotkey": VALIDATOR_HOTKEY,
                "db_file": demo_dir / "validator.db",
                "voicebench_source": "fixture",
                # Every leaderboard column; the four judged ones use the CPU judge unless told otherwise.
                "subsets": list(SUBSETS),
                "samples_per_subset": samples_per_subset,
                # The ASR + LLM miner is CPU-bound: more requests in flight only queue inside it, and
                # the time they wait there counts against the request deadline.
                "miner_concurrency": min(settings.miner_concurrency, 2),
                # The example miner builds FROM the local base image, which already holds its packages.
                "build_network": "none",
                "build_args": {"BASE_IMAGE": LOCAL_BASE_IMAGE, **settings.build_args},
                "sync_interval_s": min(settings.sync_interval_s, 2.0),
                "weights_interval_s": min(settings.weights_interval_s, 3.0),
                "start_timeout_s": min(settings.start_timeout_s, 180.0),
            }
        )
        chain = await asyncio.to_thread(
            LocalChain.create, chain_file, settings.netuid, validator_hotkey=VALIDATOR_HOTKEY
        )
        await asyncio.to_thread(
            seed_chain, chain, settings.netuid, hub_root, work, sources, settings.competitions[0]
        )
        print(
            f"local chain: {chain_file}\nlocal hub:   {hub_url}\nminers committed: {len(DEMO_MINERS)}",
            file=out,
            flush=True,
        )
        async with open_app(demo_settings) as app:
            stop = asyncio.Event()
            daemon = asyncio.create_task(app.service.run(stop))
            try:
                await _wait_until_settled(app.store, daemon, timeout_s)
            finally:
                stop.set()
                await daemon
            neurons = await chain.neurons(settings.netuid)
            _, skipped = submissions_from_chain(neurons, await chain.commitments(settings.netuid))
            print_round(app.store, chain, settings.netuid, skipped, out)
            weights = app.store.last_weight_set()
    return 0 if weights is not None else 1


async def _wait_until_settled(store: Store, daemon: asyncio.Task[None], timeout_s: float) -> None:
    """Wait until every submission is evaluated and weights were set after the last evaluation."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.done():
            daemon.result()
            raise DemoError("the validator stopped before the round finished")
        rows = await asyncio.to_thread(store.miner_rows)
        pending = await asyncio.to_thread(store.pending_count)
        weights = await asyncio.to_thread(store.last_weight_set)
        finished = await asyncio.to_thread(store.last_evaluation_finished_at)
        if rows and pending == 0 and weights is not None and weights.created_at >= finished:
            return
        await asyncio.sleep(1.0)
    raise DemoError(f"the round did not finish within {timeout_s:.0f}s")


def print_round(
    store: Store, chain: LocalChain, netuid: int, skipped: list[tuple[RawCommitment, str]], out: TextIO
) -> None:
    """Print per-miner outcomes, the commitments skipped, and the weights now on the chain."""
    on_chain, block = chain.weights(netuid, VALIDATOR_HOTKEY)
    rows = [
        (
            r.uid,
            r.hotkey[:10] + "...",
            f"{r.repo_id}@{r.revision[:8]}",
            r.status,
            r.score,
            f"{on_chain.get(r.uid, 0.0):.4f}",
            (r.error or "")[:70],
        )
        for r in store.miner_rows()
    ]
    print("\nEvaluation round", file=out)
    print(render_table(("uid", "hotkey", "submission", "status", "score", "weight", "note"), rows), file=out)
    print_columns(store, out)
    for commitment, reason in skipped:
        print(f"skipped commitment of {commitment.hotkey[:10]}...: {reason}", file=out)
    print(
        f"\nweights on chain (block {block}): "
        + ", ".join(f"uid {uid}: {w:.4f}" for uid, w in sorted(on_chain.items())),
        file=out,
        flush=True,
    )


def print_columns(store: Store, out: TextIO) -> None:
    """Print each evaluated miner's 0-100 score on every VoiceBench column."""
    scored = [(r, store.subset_scores(r.hotkey, r.revision)) for r in store.miner_rows()]
    scored = [(r, columns) for r, columns in scored if columns]
    if not scored:
        return
    header = ("uid", *(SUBSETS[name].column for name in SUBSETS))
    rows = [(r.uid, *(_column(columns, name) for name in SUBSETS)) for r, columns in scored]
    print("\nVoiceBench columns (0-100)", file=out)
    print(render_table(header, rows), file=out)


def _column(columns: dict[str, float], subset: str) -> str:
    return f"{columns[subset]:.1f}" if subset in columns else "-"
