"""Every setting of the validator, in one validated class.

Each field is read, in order of precedence, from a command-line flag (``--field-name``), an environment
variable (``VOICE_VALIDATOR_FIELD_NAME``), a ``.env`` file, then the default below. The README's
configuration table is generated from this class (``voice-validator settings``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from evaluation.competition import CompetitionSpec
from evaluation.sandbox.dockerfile_policy import DEFAULT_ALLOWED_BASES, BaseRule
from evaluation.sandbox.egress_policy import build_pool, parse_host_entries
from evaluation.voicebench.subsets import SUBSETS
from validator.slots import worker_slots

ENV_PREFIX = "VOICE_VALIDATOR_"


class CompetitionScoring(BaseModel):
    """One competition's entry in ``competition-scoring``: its task and the weights of its score."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["v2t", "v2v"] = "v2t"
    voicebench: float = Field(1.0, ge=0, description="Weight of the VoiceBench score.")
    mos: float = Field(0.0, ge=0, description="Weight of the MOS score (v2v only).")

    @model_validator(mode="after")
    def _valid_spec(self) -> CompetitionScoring:
        self.spec()  # raises ValueError with the reason (zero weights, MOS on v2t)
        return self

    def spec(self) -> CompetitionSpec:
        """The evaluation library's form of this entry."""
        return CompetitionSpec(task=self.task, voicebench_weight=self.voicebench, mos_weight=self.mos)


class Settings(BaseSettings):
    """The validator's configuration. Built once at start and passed down; nothing else reads the env."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        validate_default=True,
    )

    # --- chain ---------------------------------------------------------------------------------
    netuid: int = Field(1, ge=0, description="Subnet id whose miners are evaluated.")
    chain: Literal["local", "bittensor"] | None = Field(
        None,
        description="Chain backend, required by run, commit and preflight: 'bittensor' for a real "
        "subtensor, 'local' for the file-backed development chain (tests, demo).",
    )
    subtensor_network: str = Field(
        "finney", description="Subtensor network: finney, test, local, or a ws(s):// URL."
    )
    subtensor_chain_endpoint: str | None = Field(
        None, description="Subtensor websocket endpoint; overrides the network's default."
    )
    wallet_name: str = Field("default", description="Wallet (coldkey) name.")
    wallet_hotkey: str = Field("default", description="Hotkey name inside the wallet.")
    wallet_path: str = Field("~/.bittensor/wallets", description="Folder holding the wallets.")
    local_chain_file: Path = Field(
        Path("var/local-chain.json"), description="State file of the local development chain."
    )
    validator_hotkey: str = Field(
        "validator", min_length=1, description="This node's hotkey (SS58) on the local chain."
    )
    competitions: list[str] = Field(
        default_factory=lambda: ["v4"],
        description="Competition ids accepted in miner commitments (JSON list); the live subnet runs v4. "
        "The first is what `commit` writes by default.",
    )
    version_key: int | None = Field(
        None, ge=0, description="version_key of weight sets; default derived from the package version."
    )
    chain_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Deadline of one chain call; a hung connection is dropped and rebuilt after it "
        "(the outer deadline allows for that).",
    )
    block_stall_s: float = Field(
        120.0, gt=0, description="No new block for this long rebuilds the chain connection (bittensor)."
    )

    # --- weights -------------------------------------------------------------------------------
    weights_dry_run: bool = Field(
        False, description="Compute and log weights, record them, but never submit them."
    )
    weights_smoothing: float = Field(
        0.5, gt=0, le=1, description="EMA factor of a submission's newest evaluation (1: newest only)."
    )
    weights_leader_margin: float = Field(
        1.0, ge=0, description="Points (0-100) a challenger must beat the leader by to take the top."
    )
    weights_leader_share: float = Field(
        0.8, ge=0.5, le=1, description="Weight of the top miner; the others share the rest."
    )
    weights_baseline: float = Field(
        0.0, ge=0, lt=100, description="Score (0-100) a miner must exceed to earn any weight."
    )
    weights_burn_uid: int | None = Field(
        None, ge=0, description="uid that receives all weight when no miner exceeds the baseline."
    )
    weights_retries: int = Field(3, ge=0, description="Retries of a weight set that failed transiently.")
    weights_reveal_grace_blocks: int = Field(
        360,
        ge=1,
        description="Under commit-reveal: blocks after the reveal round is stored within which the "
        "revealed weights must be on chain, or the set is reported as not in force.",
    )
    weights_retry_backoff_s: float = Field(
        5.0, ge=0, description="First wait before such a retry; doubles each time."
    )

    # --- storage -------------------------------------------------------------------------------
    data_dir: Path = Field(Path("var"), description="Folder for the database, repos and caches.")
    db_file: Path | None = Field(None, description="SQLite file; default validator.db in data-dir.")

    # --- hub -----------------------------------------------------------------------------------
    hub_endpoint: str | None = Field(
        None, description="HuggingFace endpoint URL; empty means huggingface_hub's default."
    )
    hf_token: SecretStr | None = Field(None, description="HuggingFace token for gated or private repos.")
    max_repo_bytes: int = Field(20 * 2**30, gt=0, description="Largest miner repo accepted, in bytes.")
    max_repo_files: int = Field(10_000, gt=0, description="Most files a miner repo may hold.")
    fetch_timeout_s: float = Field(1800.0, gt=0, description="Deadline to download one repo.")
    repo_cache_bytes: int = Field(
        50 * 2**30, gt=0, description="Disk budget of cached repo snapshots; least recently used go first."
    )

    # --- sandbox -------------------------------------------------------------------------------
    docker_host: str | None = Field(None, description="Docker daemon URL; empty means the SDK's default.")
    sandbox_memory: str = Field("16g", description="Memory limit of a miner container.")
    sandbox_cpus: float = Field(4.0, gt=0, description="CPU limit of a miner container.")
    sandbox_pids_limit: int = Field(512, gt=0, description="Process limit of a miner container.")
    sandbox_tmpfs_size: str = Field("1g", description="Size of the container's writable /tmp (tmpfs).")
    sandbox_shm_size: str = Field("256m", description="Size of /dev/shm in containers and builds.")
    sandbox_nofile_limit: int = Field(4096, gt=0, description="Open-file limit of a miner container.")
    sandbox_volume_tmpfs_size: str = Field(
        "64m", description="tmpfs mounted over each VOLUME an image declares (never a disk volume)."
    )
    build_memory: str = Field("4g", description="Memory limit of each image build step (no swap).")
    build_cpu_shares: int = Field(512, gt=0, description="CPU weight of image build steps.")
    build_pids_limit: int = Field(
        1024, gt=0, description="Processes of one image build, all its steps together (a cgroup of its own)."
    )
    build_disk_limit: str = Field(
        "60g", description="Disk one image build may write (layers, step volumes); more: the miner's fault."
    )
    build_min_free_disk: str = Field(
        "20g",
        description="Free space the docker data root needs before a build; less is our failure (retried "
        "later). 0: no check.",
    )
    image_cache_size: int = Field(
        8, ge=0, description="Unused miner images kept for reuse; least recently used go first."
    )
    gpu_device_ids: list[str] = Field(
        default_factory=list, description="GPU ids given to miner containers (JSON list); empty: no GPU."
    )
    gpu_slots: list[list[str]] = Field(
        default_factory=list,
        description="One evaluation worker per slot, its miner containers pinned to the slot's GPU ids "
        '(JSON list of lists, e.g. [["0"],["1"]]); replaces eval-workers and gpu-device-ids. Empty: '
        "eval-workers workers with gpu-device-ids (none: CPU only).",
    )
    build_timeout_s: float = Field(1800.0, gt=0, description="Deadline of one image build.")
    start_timeout_s: float = Field(600.0, gt=0, description="Deadline for a miner to report model_loaded.")
    build_network: Literal["proxy", "none", "default"] = Field(
        "proxy",
        description="Network of image builds: 'proxy' (a network of its own per build, out only through "
        "the validator's allow-listing proxy), 'none' (no network), or 'default' (the daemon's bridge: "
        "LAN, link-local addresses and the internet open to every build step; unsafe).",
    )
    build_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts build steps may reach through the proxy (JSON list): 'name' (ports 80, 443), "
        "'*.suffix', 'name:port', an IPv4 literal, 'internal:name:port' for an operator's host on a "
        "private address. Empty: read at the first build from this machine's pip and apt configuration "
        "and the hub endpoint.",
    )
    build_proxy_port: int = Field(
        3199,
        gt=0,
        lt=65536,
        description="Port of the build egress proxy on each build network's gateway (scripts/dockerd.sh "
        "opens it: VV_BUILD_PROXY_PORT).",
    )
    build_subnet_pool: str = Field(
        "10.214.0.0/16",
        description="Private IPv4 pool of per-build networks, a /24 each (scripts/dockerd.sh guards it: "
        "VV_DOCKER_BUILD_POOL).",
    )
    build_args: dict[str, str] = Field(
        default_factory=dict, description="Docker build args for miner images (JSON object)."
    )
    build_context_bytes: int | None = Field(
        None,
        gt=0,
        description="Largest build context sent to the daemon after .dockerignore, tar headers included; "
        "empty: max-repo-bytes plus 256 MiB. Must be at least max-repo-bytes.",
    )
    build_allowed_bases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_BASES),
        description="Base images a miner's Dockerfile may build FROM (JSON list): a repository (any tag), "
        "repo:tag, or repo@sha256:DIGEST (FROM must then carry that digest), named as Docker does (python "
        "is docker.io/library/python). Also allowed: scratch, earlier stages, and any image that is the "
        "value of one of your build-args (e.g. BASE_IMAGE): you chose it.",
    )

    # --- evaluation ----------------------------------------------------------------------------
    voicebench_source: Literal["hub", "fixture"] = Field(
        "hub",
        description="'hub': VoiceBench from the hub (voicebench-repo at voicebench-revision); 'fixture': "
        "the team's small espeak-ng dataset in the same layout (demo, tests, offline trials).",
    )
    voicebench_repo: str = Field("hlt-lab/voicebench", description="Dataset repo of VoiceBench.")
    voicebench_revision: str | None = Field(
        None, description="Dataset revision (commit) to pin; empty means the hub's default branch."
    )
    voicebench_dir: Path | None = Field(
        None,
        description="Local VoiceBench data in the hub's parquet layout; default voicebench/ in data-dir.",
    )
    subsets: list[str] = Field(
        default_factory=lambda: list(SUBSETS),
        description="VoiceBench subsets evaluated (JSON list); default all nine leaderboard columns. The "
        "judge-scored ones (alpacaeval_full, commoneval, wildvoice, sd-qa) start the LLM judge.",
    )
    sd_qa_all_regions: bool = Field(
        False, description="Evaluate sd-qa on all 11 regions instead of the leaderboard's usa split."
    )
    samples_per_subset: int | None = Field(
        50, gt=0, description="Items sampled per subset and round; empty means every item."
    )
    subset_samples: dict[str, int] = Field(
        default_factory=dict, description="Per-subset sample sizes overriding samples-per-subset (JSON)."
    )
    sample_seed: int = Field(0, description="Seed of items and perturbations when there is no chain round.")
    round_blocks: int = Field(
        360, gt=0, description="Blocks per evaluation round; the round's first block hash seeds the items."
    )
    perturb_audio: bool = Field(
        True, description="Seeded gain/speed/noise/silence changes to defeat audio-hash answer tables."
    )
    miner_concurrency: int = Field(4, ge=1, le=64, description="Requests in flight to one miner.")
    miner_timeout_s: float = Field(60.0, gt=0, description="Deadline of one miner request.")
    evaluation_budget_s: float = Field(
        1800.0, gt=0, description="Time budget of one evaluation's requests; later samples fail."
    )

    # --- voice to voice ------------------------------------------------------------------------
    competition_scoring: dict[str, CompetitionScoring] = Field(
        default_factory=dict,
        description="Per competition id: task 'v2t' or 'v2v' and the weights of the VoiceBench and MOS "
        'scores (JSON, e.g. {"v2v": {"task": "v2v", "voicebench": 1}}); an id without an entry is v2t, '
        "VoiceBench only.",
    )
    v2v_path: Literal["/api/v1/inference", "/api/v1/v2v"] = Field(
        "/api/v1/inference", description="Voice-to-voice endpoint miners serve (the guide's name, or v2v)."
    )
    v2v_asr_model: str = Field(
        "auto",
        description="Whisper model that transcribes spoken answers: 'auto' (large-v3 on a GPU, else the "
        "bundled tiny.en), 'bundled-tiny.en' (offline, CPU), a faster-whisper model name (downloaded "
        "once) or a local model folder.",
    )
    v2v_asr_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device of the ASR model ('auto': cuda when a GPU is present)."
    )
    v2v_wer_tolerance: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="WER between a miner's text and its audio's transcript that costs nothing; above "
        "it the content score falls linearly to 0 at WER 1.",
    )
    v2v_max_audio_s: float = Field(120.0, gt=0, description="Longest spoken answer accepted, in seconds.")
    v2v_max_response_bytes: int = Field(
        16 * 2**20, gt=0, description="Largest voice-to-voice response body, in bytes."
    )
    v2v_model_timeout_s: float = Field(
        300.0, gt=0, description="Deadline of one ASR or MOS call (and of loading the ASR model)."
    )
    mos_predictor: Literal["none"] = Field(
        "none",
        description="Speech-quality (MOS) model for v2v answers; 'none': not measured, and a competition "
        "may not weigh MOS. No predictor ships yet (see the README).",
    )

    # --- judge ---------------------------------------------------------------------------------
    judge: Literal["auto", "vllm", "llama-cpp", "url"] = Field(
        "auto",
        description="LLM judge for the open and qa columns: 'vllm' (started here, GPU), 'llama-cpp' "
        "(started here, CPU, SmolLM2-135M: low quality, for demos and tests), 'url' (a server you run), "
        "'auto' (vllm when a GPU is present, else llama-cpp). Started only when a judged subset is on.",
    )
    judge_url: str | None = Field(None, description="OpenAI-compatible judge URL when judge is 'url'.")
    judge_model: str = Field(
        "Qwen/Qwen2.5-14B-Instruct-AWQ", description="Model vLLM serves as the judge (judge 'vllm')."
    )
    judge_revision: str | None = Field(None, description="Judge model revision to pin (a commit sha).")
    judge_dtype: str = Field("auto", description="vLLM --dtype of the judge.")
    judge_quantization: str | None = Field(None, description="vLLM --quantization of the judge.")
    judge_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="Share of the GPU's memory vLLM may take; the rest is the miners'."
    )
    judge_gpu_device_ids: list[str] = Field(
        default_factory=list,
        description="GPU ids vLLM may use (CUDA_VISIBLE_DEVICES, JSON list); empty: vLLM's default, GPU 0.",
    )
    judge_max_model_len: int = Field(4096, gt=0, description="vLLM --max-model-len of the judge.")
    judge_port: int = Field(8011, gt=0, lt=65536, description="127.0.0.1 port of the judge server.")
    judge_concurrency: int = Field(32, ge=1, description="Judge requests in flight (vLLM batches them).")

    # --- daemon --------------------------------------------------------------------------------
    sync_interval_s: float = Field(60.0, gt=0, description="Seconds between reads of the chain.")
    weights_interval_s: float = Field(600.0, gt=0, description="Seconds between weight sets.")
    eval_workers: int = Field(
        1, ge=1, le=16, description="Submissions evaluated at once, when gpu-slots is empty."
    )
    max_attempts: int = Field(3, ge=1, description="Tries of a submission when our side fails.")
    retry_backoff_s: float = Field(300.0, ge=0, description="Wait before retrying such a submission.")
    validator_id: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$",
        description="Names this validator's containers, so validators sharing a Docker host never "
        "touch each other's.",
    )

    # --- observability -------------------------------------------------------------------------
    metrics_port: int | None = Field(
        None,
        ge=0,
        lt=65536,
        description="Port on 127.0.0.1 serving Prometheus metrics at /metrics; empty or 0: none.",
    )
    health_timeout_s: float = Field(
        3.0, gt=0, description="Deadline of each check `voice-validator status` makes (judge, Docker)."
    )

    # --- logging -------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["auto", "console", "json"] = Field(
        "auto", description="'auto': console on a terminal, JSON lines otherwise."
    )

    @field_validator("hub_endpoint", "docker_host", "subtensor_chain_endpoint", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("build_allowed_hosts")
    @classmethod
    def _valid_allowed_hosts(cls, value: list[str]) -> list[str]:
        parse_host_entries(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("build_subnet_pool")
    @classmethod
    def _valid_build_pool(cls, value: str) -> str:
        return str(build_pool(value))

    @field_validator("subsets")
    @classmethod
    def _known_subsets(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(SUBSETS))
        if unknown:
            raise ValueError(f"unknown VoiceBench subsets {unknown}; known: {sorted(SUBSETS)}")
        if not value:
            raise ValueError("at least one subset must be evaluated")
        return value

    @field_validator("build_allowed_bases")
    @classmethod
    def _valid_bases(cls, value: list[str]) -> list[str]:
        for entry in value:
            BaseRule.parse(entry)  # raises ValueError naming the entry
        return value

    @field_validator("gpu_slots")
    @classmethod
    def _valid_slots(cls, value: list[list[str]]) -> list[list[str]]:
        worker_slots(value, 1)  # raises ValueError naming the bad slot
        return value

    @model_validator(mode="after")
    def _one_way_to_give_gpus(self) -> Settings:
        if self.gpu_slots and self.gpu_device_ids:
            raise ValueError("set gpu_slots or gpu_device_ids, not both (each slot names its own GPUs)")
        return self

    @model_validator(mode="after")
    def _scoring_matches_competitions(self) -> Settings:
        unknown = sorted(set(self.competition_scoring) - set(self.competitions))
        if unknown:
            # A typo here would silently score a v2v competition as v2t.
            raise ValueError(f"competition-scoring names {unknown}, not in competitions {self.competitions}")
        weighs_mos = sorted(name for name, c in self.competition_scoring.items() if c.mos > 0)
        if weighs_mos and self.mos_predictor == "none":
            raise ValueError(f"competitions {weighs_mos} weigh MOS but mos-predictor is 'none'")
        return self

    @model_validator(mode="after")
    def _cache_holds_a_repo(self) -> Settings:
        if self.repo_cache_bytes < self.max_repo_bytes:
            raise ValueError("repo_cache_bytes must be at least max_repo_bytes, or no repo fits the cache")
        return self

    @model_validator(mode="after")
    def _context_holds_a_repo(self) -> Settings:
        if self.build_context_bytes is not None and self.build_context_bytes < self.max_repo_bytes:
            # A repo fetch accepted would then fail its build, charged to the miner.
            raise ValueError("build_context_bytes must be at least max_repo_bytes")
        return self

    @property
    def context_max_bytes(self) -> int:
        """The build context cap in force: ``build_context_bytes``, else max-repo-bytes + 256 MiB."""
        return self.build_context_bytes or self.max_repo_bytes + 256 * 2**20

    @property
    def database_path(self) -> Path:
        """Where the SQLite database lives."""
        return self.db_file or self.data_dir / "validator.db"

    @property
    def voicebench_path(self) -> Path:
        """Where the VoiceBench parquet files live (downloaded, or the fixture built here)."""
        return self.voicebench_dir or self.data_dir / "voicebench"

    @property
    def worker_slots(self) -> list[tuple[str, ...]]:
        """The GPU ids of each evaluation worker; its length is the number of workers."""
        return worker_slots(self.gpu_slots, self.eval_workers, self.gpu_device_ids)

    @property
    def competition_specs(self) -> dict[str, CompetitionSpec]:
        """What each accepted competition measures (v2t, VoiceBench only, unless configured)."""
        scoring = self.competition_scoring
        return {
            name: scoring[name].spec() if name in scoring else CompetitionSpec() for name in self.competitions
        }

    @property
    def voice_to_voice(self) -> bool:
        """Whether any competition is voice-to-voice (the ASR model is then loaded at start)."""
        return any(spec.task == "v2v" for spec in self.competition_specs.values())

    @property
    def repos_dir(self) -> Path:
        """Scratch folder for downloaded miner repos."""
        return self.data_dir / "repos"


# Flags that pm2 start lines of other Bittensor validators use; each means one of our settings.
LEGACY_FLAGS = {
    "--subtensor.network": "--subtensor-network",
    "--subtensor.chain_endpoint": "--subtensor-chain-endpoint",
    "--wallet.name": "--wallet-name",
    "--wallet.hotkey": "--wallet-hotkey",
    "--wallet.path": "--wallet-path",
    "--netuid": "--netuid",
}


def translate_legacy_flags(args: list[str]) -> list[str]:
    """Rewrite ``--wallet.name x`` / ``--wallet.name=x`` style flags to this project's flags."""
    out = []
    for arg in args:
        flag, eq, value = arg.partition("=")
        out.append(LEGACY_FLAGS.get(flag, flag) + eq + value if flag in LEGACY_FLAGS else arg)
    return out


def load_settings(cli_args: list[str] | None = None, **overrides: object) -> Settings:
    """Build the settings from flags, environment and defaults; ``overrides`` win over all of them."""
    args = translate_legacy_flags(list(cli_args or []))
    return Settings(_cli_parse_args=args, **overrides)  # type: ignore[call-arg,arg-type]
