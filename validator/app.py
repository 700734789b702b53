"""The composition root: turns Settings into a wired service. The only place adapters are chosen."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType

import aiohttp
import structlog

from evaluation.asr import WhisperRecognizer
from evaluation.errors import InfrastructureError
from evaluation.fetch import HubRepoSource, RepoSource, default_hub_endpoint
from evaluation.judge.client import JudgeClient
from evaluation.judge.port import JudgeInfo
from evaluation.judge.prompts import PROMPT_VERSION
from evaluation.judge.server import (
    JudgeServer,
    JudgeServerError,
    JudgeServerSpec,
    attach,
    gpu_present,
    llama_cpp_spec,
    vllm_spec,
)
from evaluation.pipeline import Pipeline, PipelineConfig
from evaluation.prebuild import PrebuildConfig
from evaluation.progress import Observe
from evaluation.repo_cache import CachedRepoSource
from evaluation.sandbox.docker_sandbox import DockerSandbox, SandboxConfig
from evaluation.sandbox.dockerfile_policy import BuildPolicy
from evaluation.sandbox.port import Sandbox
from evaluation.voice_to_voice import VoiceToVoiceConfig, VoiceToVoiceScorer
from evaluation.voicebench.dataset import Item, load_spec
from evaluation.voicebench.evaluators import JUDGED_EVALUATORS
from evaluation.voicebench.fixture import build_fixture
from evaluation.voicebench.hub import download_voicebench
from evaluation.voicebench.subsets import SubsetSpec, subset_spec
from validator.chain.facade import ChainFacade, nested_timeout
from validator.chain.local import LocalChain
from validator.chain.port import Chain, ChainError
from validator.metrics import Metrics, serve_metrics
from validator.service import ServiceConfig, ValidatorService
from validator.settings import Settings
from validator.store import Store
from validator.version import version_key
from validator.weights import WeightPolicy

log = structlog.get_logger(__name__)


@dataclass
class App:
    """Everything a running validator holds."""

    settings: Settings
    store: Store
    chain: ChainFacade
    sandbox: Sandbox
    pipeline: Pipeline
    service: ValidatorService
    metrics: Metrics | None = None
    metrics_port: int | None = None  # the bound port when metrics are served


def sandbox_config(settings: Settings) -> SandboxConfig:
    """The container limits and build options from settings."""
    return SandboxConfig(
        docker_host=settings.docker_host,
        validator_id=settings.validator_id,
        memory=settings.sandbox_memory,
        cpus=settings.sandbox_cpus,
        pids_limit=settings.sandbox_pids_limit,
        gpu_device_ids=tuple(settings.gpu_device_ids),
        build_timeout_s=settings.build_timeout_s,
        start_timeout_s=settings.start_timeout_s,
        build_network=settings.build_network,
        build_args=dict(settings.build_args),
        allowed_bases=tuple(settings.build_allowed_bases),
        tmpfs_size=settings.sandbox_tmpfs_size,
        shm_size=settings.sandbox_shm_size,
        nofile_limit=settings.sandbox_nofile_limit,
        volume_tmpfs_size=settings.sandbox_volume_tmpfs_size,
        build_memory=settings.build_memory,
        build_cpu_shares=settings.build_cpu_shares,
        build_pids_limit=settings.build_pids_limit,
        build_disk_limit=settings.build_disk_limit,
        build_min_free_disk=settings.build_min_free_disk,
        image_cache_size=settings.image_cache_size,
        context_max_bytes=settings.context_max_bytes,
        build_allowed_hosts=tuple(settings.build_allowed_hosts),
        build_proxy_port=settings.build_proxy_port,
        build_subnet_pool=settings.build_subnet_pool,
        hub_endpoint=settings.hub_endpoint or default_hub_endpoint(),
    )


def build_policy(settings: Settings) -> BuildPolicy:
    """The Dockerfile policy: the allowed bases and the build args the daemon will substitute."""
    return BuildPolicy(
        allowed_bases=tuple(settings.build_allowed_bases), build_args=dict(settings.build_args)
    )


def prebuild_config(settings: Settings) -> PrebuildConfig:
    """What every repo is checked against before a build: the same limits the fetch applies."""
    return PrebuildConfig(
        max_repo_bytes=settings.max_repo_bytes,
        max_files=settings.max_repo_files,
        policy=build_policy(settings),
    )


def pipeline_config(settings: Settings) -> PipelineConfig:
    """How the pipeline samples and queries, from settings."""
    return PipelineConfig(
        samples_per_subset=settings.samples_per_subset,
        subset_samples=dict(settings.subset_samples),
        seed=settings.sample_seed,
        perturb=settings.perturb_audio,
        concurrency=settings.miner_concurrency,
        miner_timeout_s=settings.miner_timeout_s,
        evaluation_budget_s=settings.evaluation_budget_s,
        prebuild=prebuild_config(settings),
    )


def voice_config(settings: Settings) -> VoiceToVoiceConfig:
    """Limits and rules of the voice-to-voice evaluation, from settings."""
    return VoiceToVoiceConfig(
        path=settings.v2v_path,
        max_audio_s=settings.v2v_max_audio_s,
        max_response_bytes=settings.v2v_max_response_bytes,
        wer_tolerance=settings.v2v_wer_tolerance,
        model_timeout_s=settings.v2v_model_timeout_s,
    )


async def make_voice_scorer(settings: Settings) -> VoiceToVoiceScorer | None:
    """The voice-to-voice scorer when a competition is v2v (None otherwise), its ASR model loaded now.

    Loading at start means a missing package or a model that cannot be downloaded stops the validator
    with the reason, instead of failing every v2v evaluation later. No MOS predictor ships yet
    (``mos-predictor`` 'none'): MOS is recorded as not measured.
    """
    if not settings.voice_to_voice:
        return None
    recognizer = WhisperRecognizer(
        settings.v2v_asr_model,
        device=settings.v2v_asr_device,
        download_root=str(settings.data_dir / "models" / "whisper"),
    )
    try:
        # The first load of a named model downloads it: bounded like any other outside call.
        async with asyncio.timeout(settings.v2v_model_timeout_s):
            await asyncio.to_thread(recognizer.load)
    except TimeoutError as exc:
        raise InfrastructureError(
            f"ASR model {settings.v2v_asr_model!r} not loaded within {settings.v2v_model_timeout_s:g}s"
        ) from exc
    log.info("voice-to-voice ASR ready", model=recognizer.name, mos_predictor=settings.mos_predictor)
    return VoiceToVoiceScorer(recognizer, voice_config(settings), mos=None)


def benchmark_specs(settings: Settings) -> list[tuple[SubsetSpec, tuple[str, ...] | None]]:
    """The configured subsets with the splits to evaluate: None for the subset's default splits (those
    present are pooled), or every region of sd-qa when asked for."""
    chosen: list[tuple[SubsetSpec, tuple[str, ...] | None]] = []
    for name in settings.subsets:
        spec = subset_spec(name)
        chosen.append((spec, spec.all_splits if settings.sd_qa_all_regions and name == "sd-qa" else None))
    return chosen


async def load_benchmark(settings: Settings) -> dict[str, Sequence[Item]]:
    """Load the configured VoiceBench subsets: downloaded from the hub, or the team's fixture built here."""
    root = settings.voicebench_path
    specs = benchmark_specs(settings)
    if settings.voicebench_source == "fixture":
        log.info("preparing the bundled VoiceBench fixture (espeak-ng)", dir=str(root))
        await asyncio.to_thread(build_fixture, root, [spec.name for spec, _ in specs])
    else:
        log.info(
            "downloading VoiceBench", repo=settings.voicebench_repo, revision=settings.voicebench_revision
        )
        await asyncio.to_thread(
            download_voicebench,
            root,
            repo_id=settings.voicebench_repo,
            revision=settings.voicebench_revision,
            endpoint=settings.hub_endpoint,
            token=settings.hf_token.get_secret_value() if settings.hf_token else None,
            subsets=[spec for spec, _ in specs],
            all_regions=settings.sd_qa_all_regions,
        )
    benchmark: dict[str, Sequence[Item]] = {}
    for spec, splits in specs:
        benchmark[spec.name] = await asyncio.to_thread(
            load_spec, root, spec, splits, cache_dir=settings.data_dir / "cache" / "datasets"
        )
        log.info("benchmark subset loaded", subset=spec.name, items=len(benchmark[spec.name]))
    return benchmark


class ChainNotChosenError(ChainError):
    """No ``--chain`` was given: a validator must never guess which chain it serves."""


async def make_chain(settings: Settings, *, substrate: object = None) -> ChainFacade:
    """The chain adapter chosen by ``settings.chain``, behind the facade.

    With a real chain the wallet's hotkey is read now, so a missing or unreadable wallet stops the
    validator at start with the path in the message instead of at the first weight set. The local
    chain's file must exist. The adapter gets ``chain-timeout-s`` for one call; the facade's deadline
    is nested outside it (:func:`~validator.chain.facade.nested_timeout`), so a hung connection is
    dropped by the adapter and rebuilt, never cut short by the facade. ``substrate`` replaces the
    bittensor RPC backend (tests).
    """
    adapter: Chain
    if settings.chain is None:
        raise ChainNotChosenError(
            "no chain chosen: pass --chain bittensor (a real subtensor; see --subtensor-network) or"
            " --chain local (the file-backed development chain, --local-chain-file), or set"
            " VOICE_VALIDATOR_CHAIN"
        )
    if settings.chain == "bittensor":
        # Imported only when chosen: the SDK is heavy, and the local chain needs none of it.
        from validator.chain.bittensor_chain import BittensorChain

        real = BittensorChain(
            settings.subtensor_network,
            chain_endpoint=settings.subtensor_chain_endpoint,
            wallet_name=settings.wallet_name,
            wallet_hotkey=settings.wallet_hotkey,
            wallet_path=settings.wallet_path,
            call_timeout_s=settings.chain_timeout_s,
            substrate=substrate,
        )
        hotkey = await asyncio.to_thread(lambda: real.hotkey)
        log.info("wallet loaded", hotkey=hotkey, network=settings.subtensor_network)
        adapter = real
    else:
        local = LocalChain(settings.local_chain_file, settings.validator_hotkey)
        # A mistyped path must stop the validator, not run it on an empty chain.
        await local.block()
        adapter = local
    return ChainFacade(adapter, timeout_s=nested_timeout(adapter.deadline_s))


def make_source(settings: Settings) -> RepoSource:
    """Where miner repos come from: the hub, through the snapshot cache."""
    hub = HubRepoSource(
        endpoint=settings.hub_endpoint,
        token=settings.hf_token.get_secret_value() if settings.hf_token else None,
        max_repo_bytes=settings.max_repo_bytes,
        max_files=settings.max_repo_files,
        timeout_s=settings.fetch_timeout_s,
    )
    return CachedRepoSource(hub, settings.data_dir / "repo-cache", settings.repo_cache_bytes)


def judge_needed(settings: Settings) -> bool:
    """Whether any configured subset is scored by the LLM judge."""
    return any(subset_spec(name).evaluator in JUDGED_EVALUATORS for name in settings.subsets)


def pin_judge_gpus(spec: JudgeServerSpec, device_ids: Sequence[str]) -> JudgeServerSpec:
    """``spec`` with CUDA_VISIBLE_DEVICES set to ``device_ids`` (unchanged when empty: vLLM's default)."""
    if not device_ids:
        return spec
    env = MappingProxyType({**spec.env, "CUDA_VISIBLE_DEVICES": ",".join(device_ids)})
    return dataclasses.replace(spec, env=env)


def worker_sandboxes(sandbox: Sandbox, slots: Sequence[tuple[str, ...]]) -> list[Sandbox]:
    """One sandbox per evaluation worker: a view pinned to the worker's GPU slot on Docker; the same
    sandbox for each worker otherwise (a test double has no GPUs to pin)."""
    if isinstance(sandbox, DockerSandbox):
        return [sandbox.for_slot(slot) for slot in slots]
    return [sandbox] * len(slots)


async def judge_mode(settings: Settings) -> str:
    """The judge server this validator starts: 'vllm' or 'llama-cpp' ('auto' picks by GPU presence)."""
    if settings.judge != "auto":
        return settings.judge
    return "vllm" if await asyncio.to_thread(gpu_present) else "llama-cpp"


def judge_spec(settings: Settings, mode: str) -> JudgeServerSpec:
    """How the validator launches its judge server in ``mode`` ('vllm' or 'llama-cpp')."""
    if mode == "vllm":
        spec = vllm_spec(
            model=settings.judge_model,
            revision=settings.judge_revision,
            dtype=settings.judge_dtype,
            quantization=settings.judge_quantization,
            gpu_memory_utilization=settings.judge_gpu_memory_utilization,
            max_model_len=settings.judge_max_model_len,
            port=settings.judge_port,
        )
        return pin_judge_gpus(spec, settings.judge_gpu_device_ids)
    return llama_cpp_spec(port=settings.judge_port)


@asynccontextmanager
async def open_judge(
    settings: Settings, *, observe: Observe | None = None
) -> AsyncIterator[JudgeClient | None]:
    """The judge client the configured subsets need (None when none does), with its server started
    and supervised here unless the operator runs it (``judge url``); stopped on exit. ``observe`` hears
    each judge request (metrics)."""
    if not judge_needed(settings):
        yield None
        return
    async with aiohttp.ClientSession() as session:
        if settings.judge == "url":
            if not settings.judge_url:
                raise JudgeServerError("judge 'url' needs --judge-url")
            model = await attach(settings.judge_url)
            info = JudgeInfo(model, settings.judge_revision or "unpinned", PROMPT_VERSION)
            log.info("judge attached", url=settings.judge_url, model=model)
            yield JudgeClient(
                settings.judge_url,
                session,
                model=model,
                info=info,
                concurrency=settings.judge_concurrency,
                observe=observe,
            )
            return
        mode = await judge_mode(settings)
        spec = judge_spec(settings, mode)
        server = JudgeServer(spec, log_path=settings.data_dir / "judge.log")
        await server.start()
        stop = asyncio.Event()
        supervisor: asyncio.Task[None] | None = None
        try:
            await server.wait_ready()
            supervisor = asyncio.create_task(server.supervise(stop), name="judge-server")
            info = dataclasses.replace(spec.info, prompt_version=PROMPT_VERSION)
            log.info(
                "judge ready",
                kind=mode,
                model=spec.model_name,
                low_quality=info.low_quality,
                url=server.base_url,
            )
            # llama.cpp's server has no n>1 and no structured outputs, but takes a GBNF grammar.
            vllm = mode == "vllm"
            yield JudgeClient(
                server.base_url,
                session,
                model=spec.model_name,
                info=info,
                concurrency=settings.judge_concurrency,
                supports_n=vllm,
                supports_guided=vllm,
                grammar_choices=not vllm,
                observe=observe,
            )
        finally:
            stop.set()
            if supervisor is not None:
                await supervisor
            else:
                await server.stop()


@asynccontextmanager
async def open_app(
    settings: Settings,
    *,
    source: RepoSource | None = None,
    sandbox: Sandbox | None = None,
    chain: ChainFacade | None = None,
    benchmark: Mapping[str, Sequence[Item]] | None = None,
) -> AsyncIterator[App]:
    """Open every resource the validator needs and close them all on exit, whatever happens."""
    async with AsyncExitStack() as stack:
        metrics = Metrics()
        metrics_port = None
        if settings.metrics_port:
            metrics_port = await stack.enter_async_context(serve_metrics(metrics, settings.metrics_port))
        store = await asyncio.to_thread(Store.open, settings.database_path)
        stack.callback(store.close)
        chain = chain or await make_chain(settings)
        stack.push_async_callback(chain.close)
        sandbox = sandbox or DockerSandbox(sandbox_config(settings), observe_build=metrics.observe_build)
        stack.push_async_callback(sandbox.close)
        removed = await sandbox.cleanup()
        if removed:
            log.info("removed containers left by a previous run", count=removed)
        judge = await stack.enter_async_context(open_judge(settings, observe=metrics.observe_judge))
        pipeline = Pipeline(
            source or make_source(settings),
            sandbox,
            benchmark if benchmark is not None else await load_benchmark(settings),
            pipeline_config(settings),
            work_dir=settings.repos_dir,
            judge=judge,
            competitions=settings.competition_specs,
            voice=await make_voice_scorer(settings),
        )
        slots = settings.worker_slots
        if settings.gpu_slots:
            log.info("evaluation workers pinned to GPU slots", slots=[list(slot) for slot in slots])
        service = ValidatorService(
            service_config(settings),
            store,
            chain,
            pipeline,
            metrics=metrics,
            worker_sandboxes=worker_sandboxes(sandbox, slots),
        )
        yield App(settings, store, chain, sandbox, pipeline, service, metrics, metrics_port)


def service_config(settings: Settings) -> ServiceConfig:
    """The daemon's knobs, from settings."""
    return ServiceConfig(
        netuid=settings.netuid,
        competitions=frozenset(settings.competitions),
        version_key=settings.version_key if settings.version_key is not None else version_key(),
        sync_interval_s=settings.sync_interval_s,
        weights_interval_s=settings.weights_interval_s,
        eval_workers=settings.eval_workers,
        max_attempts=settings.max_attempts,
        retry_backoff_s=settings.retry_backoff_s,
        policy=weight_policy(settings),
        weights_dry_run=settings.weights_dry_run,
        weights_retries=settings.weights_retries,
        weights_retry_backoff_s=settings.weights_retry_backoff_s,
        reveal_grace_blocks=settings.weights_reveal_grace_blocks,
        round_blocks=settings.round_blocks,
        # The local chain only moves when someone writes to it: no watchdog there.
        block_stall_s=settings.block_stall_s if settings.chain == "bittensor" else None,
    )


def weight_policy(settings: Settings) -> WeightPolicy:
    """The weight policy's knobs, from settings."""
    return WeightPolicy(
        smoothing=settings.weights_smoothing,
        leader_margin=settings.weights_leader_margin,
        leader_share=settings.weights_leader_share,
        baseline=settings.weights_baseline,
        burn_uid=settings.weights_burn_uid,
    )
