"""``voice-validator preflight``: the checklist an operator runs before starting the validator under pm2.

Each check ends in a verdict: ``ok``, ``warn`` (the validator runs, but something is worse than it
should be), ``FAIL`` (weights would not land) or ``skip`` (not applicable here). Only FAILs make the
command exit non-zero. The chain checks go through the same adapter and facade the daemon uses
(``make_chain``), so what passes here is what the daemon will see; Docker and the judge reuse the
status command's health checks.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from evaluation.judge.server import JudgeServerSpec
from validator.app import judge_mode, judge_needed, judge_spec, make_chain, service_config
from validator.chain.facade import ChainFacade, ChainUnavailable
from validator.chain.port import ChainError, Hyperparameters, Neuron
from validator.health import check_docker, check_judge
from validator.settings import Settings

GPU_PROBE_TIMEOUT_S = 10.0
MIN_FREE_DISK_REPOS = 2
"""Free disk below this many of the largest accepted repos is a warning: downloads and builds need room."""


class Verdict(StrEnum):
    """One check's outcome."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class Item:
    """One line of the checklist."""

    name: str
    verdict: Verdict
    detail: str

    def line(self) -> str:
        """``[  ok] chain: ...``."""
        return f"[{self.verdict.value:>4}] {self.name}: {self.detail}"


def exit_code(items: Sequence[Item]) -> int:
    """1 when any check failed (weights would not land), else 0."""
    return 1 if any(item.verdict is Verdict.FAIL for item in items) else 0


# ---- chain -----------------------------------------------------------------------------------------


async def chain_items(settings: Settings, *, substrate: object = None) -> list[Item]:
    """Wallet, chain, runtime, registration, permit and stake, commit-reveal, rate limit, version key."""
    if settings.chain is None:
        return [Item("chain", Verdict.FAIL, "no chain chosen: pass --chain bittensor (or --chain local)")]
    try:
        chain = await make_chain(settings, substrate=substrate)
    except ChainError as exc:
        name = "wallet" if settings.chain == "bittensor" else "chain"
        return [Item(name, Verdict.FAIL, str(exc))]
    try:
        return await _chain_items(settings, chain)
    finally:
        await chain.close()


async def _chain_items(settings: Settings, chain: ChainFacade) -> list[Item]:
    netuid = settings.netuid
    items: list[Item] = []
    hotkey = await chain.own_hotkey()
    if settings.chain == "bittensor":
        where = f"{settings.wallet_path}/{settings.wallet_name}/hotkeys/{settings.wallet_hotkey}"
        items.append(Item("wallet", Verdict.OK, f"hotkey {hotkey} ({where})"))
    else:
        items.append(Item("wallet", Verdict.SKIP, f"local chain: acting as validator-hotkey {hotkey}"))
    try:
        runtime = await chain.runtime_info(netuid)
        block = await chain.block()
        neurons = await chain.neurons(netuid)
        hyper = await chain.hyperparameters(netuid)
        last = await chain.last_weights_block(netuid)
    except (ChainUnavailable, ChainError) as exc:
        items.append(Item("chain", Verdict.FAIL, f"not reachable: {exc}"))
        return items
    version = "no runtime" if runtime.spec_version is None else f"runtime spec {runtime.spec_version}"
    items.append(Item("chain", Verdict.OK, f"{runtime.name} reachable at block {block}, {version}"))
    if runtime.missing_storage:
        items.append(
            Item(
                "runtime storage",
                Verdict.FAIL,
                f"the runtime lacks {', '.join(runtime.missing_storage)}, which the SDK reads to set weights:"
                " no weight set can land with this validator's bittensor against this chain",
            )
        )
    elif runtime.spec_version is not None:
        items.append(Item("runtime storage", Verdict.OK, "every storage item the weight path reads is there"))
    mine = next((n for n in neurons if n.hotkey == hotkey), None)
    items.append(_registration(mine, netuid, len(neurons)))
    if mine is not None:
        items.append(_permit(mine))
        items.append(_stake(mine, hyper))
    items.append(_commit_reveal(hyper))
    items.append(_rate_limit(hyper, last, block))
    items.append(_version_key(settings, hyper))
    return items


def _registration(mine: Neuron | None, netuid: int, count: int) -> Item:
    if mine is None:
        return Item(
            "hotkey registered", Verdict.FAIL, f"not registered on subnet {netuid} ({count} neurons there)"
        )
    return Item(
        "hotkey registered",
        Verdict.OK,
        f"uid {mine.uid} on subnet {netuid}, since block {mine.registered_block}",
    )


def _permit(mine: Neuron) -> Item:
    if mine.validator_permit:
        return Item("validator permit", Verdict.OK, "held")
    return Item(
        "validator permit",
        Verdict.FAIL,
        "not held: the chain refuses this hotkey's weights on other uids (NeuronNoValidatorPermit) until"
        " its stake earns a permit at an epoch",
    )


def _stake(mine: Neuron, hyper: Hyperparameters) -> Item:
    detail = f"{mine.stake:g} (the subnet requires {hyper.min_stake:g} to set weights)"
    if mine.stake < hyper.min_stake:
        return Item("stake", Verdict.FAIL, detail)
    return Item("stake", Verdict.OK, detail)


def _commit_reveal(hyper: Hyperparameters) -> Item:
    if hyper.commit_reveal:
        return Item(
            "commit-reveal",
            Verdict.OK,
            "on: weights go out as timelocked commits the chain reveals itself; the validator reads them"
            " back after the reveal round",
        )
    return Item("commit-reveal", Verdict.OK, "off: weights are set directly")


def _rate_limit(hyper: Hyperparameters, last: int | None, block: int) -> Item:
    limit = hyper.weights_rate_limit
    if last is None:
        return Item("weights rate limit", Verdict.OK, f"{limit} blocks; no weights set yet")
    return Item(
        "weights rate limit",
        Verdict.OK,
        f"{limit} blocks; last set at block {last}, next allowed at block {max(block, last + limit)}",
    )


def _version_key(settings: Settings, hyper: Hyperparameters) -> Item:
    ours = service_config(settings).version_key
    sent = max(ours, hyper.version_key)
    detail = f"ours {ours}, the subnet's minimum {hyper.version_key}: weight sets carry {sent}"
    return Item("version key", Verdict.OK, detail)


# ---- the machine -----------------------------------------------------------------------------------


async def judge_item(settings: Settings) -> Item:
    """The operator's judge answers (``judge url``), or the one the validator starts can be started."""
    if not judge_needed(settings):
        return Item("judge", Verdict.SKIP, "not needed: no judge-scored subset configured")
    if settings.judge == "url":
        check = await check_judge(settings, settings.health_timeout_s)
        return Item("judge", Verdict.OK if check.ok else Verdict.WARN, check.detail)
    mode = await judge_mode(settings)
    try:
        spec = judge_spec(settings, mode)
    except Exception as exc:  # a missing model package or file: the reason is the answer
        return Item("judge", Verdict.WARN, f"{mode} judge cannot be prepared: {type(exc).__name__}: {exc}")
    problem = _launch_problem(spec)
    if problem is not None:
        return Item("judge", Verdict.WARN, f"{mode} judge cannot start: {problem}")
    return Item("judge", Verdict.OK, f"{mode} judge ({spec.model_name}) is started by the validator")


def _launch_problem(spec: JudgeServerSpec) -> str | None:
    program = spec.argv[0]
    if shutil.which(program) is None and not Path(program).is_file():
        return f"{program!r} not found"
    if len(spec.argv) > 2 and spec.argv[1] == "-m":
        module = spec.argv[2].split(".")[0]
        if importlib.util.find_spec(module) is None:
            return f"Python module {module!r} is not installed"
    return None


async def docker_item(settings: Settings) -> Item:
    """The Docker daemon the sandbox uses answers."""
    check = await check_docker(settings, settings.health_timeout_s)
    if check.ok:
        return Item("docker", Verdict.OK, check.detail)
    return Item("docker", Verdict.WARN, f"{check.detail} (no evaluation can run without it)")


def _nvidia_smi(smi: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [smi, "--query-gpu=index,name,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=GPU_PROBE_TIMEOUT_S,
        check=False,
    )


async def gpu_item(settings: Settings, *, smi: str | None = None) -> Item:
    """The GPUs ``nvidia-smi`` lists; skip (CPU only) when it is not present."""
    smi = smi or shutil.which("nvidia-smi")
    wanted = bool(settings.gpu_slots or settings.gpu_device_ids)
    if smi is None:
        verdict = Verdict.WARN if wanted else Verdict.SKIP
        return Item("GPUs", verdict, "not present: nvidia-smi not found on PATH (miners run on CPU only)")
    try:
        done = await asyncio.to_thread(_nvidia_smi, smi)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Item("GPUs", Verdict.WARN, f"nvidia-smi failed: {type(exc).__name__}: {exc}")
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip()[-200:]
        return Item("GPUs", Verdict.WARN, f"nvidia-smi exit {done.returncode}: {tail or 'no GPU listed'}")
    return Item("GPUs", Verdict.OK, "; ".join(lines))


def disk_item(settings: Settings) -> Item:
    """Free space where the validator keeps repos, images' inputs and its database."""
    path = settings.data_dir.resolve()
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    need = MIN_FREE_DISK_REPOS * settings.max_repo_bytes
    largest = settings.max_repo_bytes / 2**30
    detail = f"{free / 2**30:.1f} GiB free at {path} (largest repo accepted: {largest:.1f} GiB)"
    return Item("free disk", Verdict.OK if free >= need else Verdict.WARN, detail)


async def preflight(settings: Settings, *, substrate: object = None) -> list[Item]:
    """Every check, chain first."""
    chain = await chain_items(settings, substrate=substrate)
    judge, docker, gpus = await asyncio.gather(
        judge_item(settings), docker_item(settings), gpu_item(settings)
    )
    return [*chain, judge, docker, gpus, await asyncio.to_thread(disk_item, settings)]
