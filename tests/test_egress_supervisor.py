"""The egress proxy as a real process under its supervisor: ready, serving, restarted, stopped."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from evaluation.errors import InfrastructureError
from evaluation.sandbox.egress_supervisor import EgressSupervisor, ProxyCommand


@pytest.fixture
async def upstream_port() -> AsyncIterator[int]:
    """A one-line HTTP server on 127.0.0.1 (the proxy's only allowed upstream here)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nyes")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def fetch(proxy_address: str, url: str) -> bytes:
    host, port = proxy_address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {url} HTTP/1.1\r\n\r\n".encode())
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for every purpose here.
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().split(") ", 1)[1][0] != "Z"


async def test_supervised_proxy_serves_is_restarted_after_a_kill_and_stops_on_close(
    upstream_port: int,
) -> None:
    command = ProxyCommand("127.0.0.1:0", (f"internal:localhost:{upstream_port}",), ("127.0.0.1/32",))
    supervisor = EgressSupervisor(command, max_backoff_s=1.0)
    try:
        with capture_logs() as logs:
            await supervisor.ensure_running()
            assert supervisor.starts == 1 and supervisor.address
            first_pid = supervisor.pid
            assert first_pid is not None
            assert (await fetch(supervisor.address, f"http://localhost:{upstream_port}/")).endswith(b"yes")
            refused = await fetch(supervisor.address, "http://other.example.org/")
            assert b" 403 " in refused
            await asyncio.sleep(0.3)  # the refusal line travels through the pipe
            assert any(
                log["event"] == "build egress proxy refused" and "not on the allow-list" in log["reason"]
                for log in logs
            ), logs
            starts_before = supervisor.starts
            os.kill(first_pid, signal.SIGKILL)
            for _ in range(100):
                if supervisor.starts > starts_before and supervisor.serving_since(supervisor.starts):
                    break
                await asyncio.sleep(0.1)
            assert supervisor.starts == starts_before + 1
            assert not supervisor.serving_since(starts_before)  # a build that ran across it can tell
            second_pid = supervisor.pid
            assert second_pid is not None and second_pid != first_pid
            assert (await fetch(supervisor.address, f"http://localhost:{upstream_port}/")).endswith(b"yes")
        assert any(log["event"] == "build egress proxy stopped; restarting" for log in logs)
    finally:
        await supervisor.close()
    assert not alive(second_pid)


async def test_a_taken_port_is_an_infrastructure_error_naming_it() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    supervisor = EgressSupervisor(
        ProxyCommand(f"127.0.0.1:{port}", (), ("127.0.0.1/32",)), start_timeout_s=3, max_backoff_s=1
    )
    try:
        with pytest.raises(InfrastructureError, match=f"not listening on 127.0.0.1:{port}.*cannot listen"):
            await supervisor.ensure_running()
    finally:
        await supervisor.close()
        taken.close()


async def test_proxy_process_exits_when_its_stdin_closes() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "evaluation.sandbox.egress_proxy",
        "--listen",
        "127.0.0.1:0",
        "--allow-peer",
        "127.0.0.1/32",
        "--exit-with-stdin",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 20))
        assert first["event"] == "listening"
        process.stdin.close()  # what happens when the validator dies: the pipe's writer is gone
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--listen", "127.0.0.1:0"], "at least one --allow-peer"),
        (["--listen", "nowhere", "--allow-peer", "127.0.0.1/32"], "ADDR:PORT"),
        (["--listen", "127.0.0.1:0", "--allow-peer", "127.0.0.1/32", "--allow-host", "bad host"], "DNS name"),
    ],
)
async def test_bad_arguments_exit_with_a_reason(args: list[str], reason: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "evaluation.sandbox.egress_proxy", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    event = json.loads(out.decode().splitlines()[0])
    assert process.returncode == 2 and event["event"] == "error" and reason in event["reason"]
