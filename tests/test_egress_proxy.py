"""The build egress proxy on real sockets (127.0.0.1 only): what it forwards, what it refuses, its bounds.

The proxy runs in the test's event loop; its "allowed" upstream is a small HTTP server of the test on
127.0.0.1, reached through an ``internal:`` entry. Names that must not resolve anywhere real go through
a resolver of the test, so no DNS query ever leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from evaluation.sandbox.egress_policy import AllowList, parse_host_entries
from evaluation.sandbox.egress_proxy import (
    EgressProxy,
    ProxyLimits,
    absolute_target,
    forward_head,
    parse_head,
)

LOCAL = [ipaddress.ip_network("127.0.0.1/32")]


@dataclass
class Upstream:
    """A tiny HTTP server: answers each request with its own head echoed in the body, then closes."""

    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            body = b"upstream says hello\n" + head
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class FakeDNS:
    """Answers for names no real resolver should ever be asked about."""

    def __init__(self, answers: dict[str, list[str]], slow: frozenset[str] = frozenset()) -> None:
        self.answers, self.slow = answers, slow
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int, family: int) -> list[str]:
        self.asked.append(host)
        if host in self.slow:
            await asyncio.sleep(5)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return self.answers[host]


@dataclass
class Running:
    proxy: EgressProxy
    port: int
    events: list[dict[str, object]]
    upstream: Upstream
    dns: FakeDNS

    def refusals(self) -> list[dict[str, object]]:
        return [e for e in self.events if e.get("event") == "refused"]


async def start_proxy(
    upstream: Upstream,
    *,
    extra_hosts: tuple[str, ...] = (),
    peers: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
    limits: ProxyLimits | None = None,
    dns: FakeDNS | None = None,
) -> Running:
    events: list[dict[str, object]] = []
    rules = parse_host_entries([f"internal:localhost:{upstream.port}", *extra_hosts])
    dns = dns or FakeDNS({"localhost": ["127.0.0.1"]})
    proxy = EgressProxy(
        AllowList(rules), LOCAL if peers is None else peers, limits=limits, emit=events.append, resolve=dns
    )
    _, port = await proxy.start("127.0.0.1", 0)
    return Running(proxy, port, events, upstream, dns)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = await Upstream().start()
    yield server
    await server.close()


@pytest.fixture
async def running(upstream: Upstream) -> AsyncIterator[Running]:
    dns = FakeDNS({
        "localhost": ["127.0.0.1"],
        "pkgs.example.org": ["127.0.0.1"],  # a "public" name pointing at loopback: DNS rebinding
        "meta.example.org": ["169.254.169.254"],  # a link-local answer: only ever a value here
        "mixed.example.org": ["11.22.33.44", "10.0.0.5"],
        "garbage.example.org": ["not-an-address"],
    })  # fmt: skip
    hosts = ("pkgs.example.org", "meta.example.org", "mixed.example.org", "garbage.example.org")
    proxy = await start_proxy(upstream, extra_hosts=hosts, dns=dns)
    yield proxy
    await proxy.proxy.close()


async def exchange(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send ``data`` to the proxy and read until it closes (a reset reads as nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout_s)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# ------------------------------------------------------------------------------------- pure parsing


def test_head_parser_reads_request_line_and_fields() -> None:
    head = parse_head(b"GET http://h.example.org/x HTTP/1.1\r\nHost: h\r\nX-A:  b \r\n\r\n", 10)
    assert (head.method, head.target, head.version) == ("GET", "http://h.example.org/x", "HTTP/1.1")
    assert head.headers == (("Host", "h"), ("X-A", "b"))


def test_absolute_targets_become_origin_form_and_user_info_is_refused() -> None:
    assert absolute_target("http://h.example.org:8080/a/b?c=1") == ("h.example.org", 8080, "/a/b?c=1")
    assert absolute_target("HTTP://h.example.org") == ("h.example.org", 80, "/")
    assert absolute_target("http://h.example.org?q") == ("h.example.org", 80, "/?q")
    for bad in ("https://h.example.org/", "/relative", "http://user@h.example.org/", "http://h/#frag"):
        with pytest.raises(Exception, match=r"."):
            absolute_target(bad)


def test_forwarded_head_drops_hop_by_hop_fields_and_pins_host() -> None:
    head = parse_head(
        b"GET http://h.example.org/x HTTP/1.1\r\nHost: other.example.org\r\nProxy-Authorization: secret\r\n"
        b"Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nAccept: */*\r\n\r\n",
        20,
    )
    out = forward_head(head, "/x", "h.example.org").decode()
    assert out.startswith("GET /x HTTP/1.1\r\nHost: h.example.org\r\n")
    assert "Accept: */*" in out and out.endswith("Connection: close\r\n\r\n")
    for gone in ("other.example.org", "secret", "X-Drop", "keep-alive"):
        assert gone not in out


# ------------------------------------------------------------------------------------- on sockets


async def test_connect_to_an_allowed_upstream_tunnels_bytes(running: Running) -> None:
    port = running.upstream.port
    answer = await exchange(
        running.port,
        f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode()
        + b"GET /through-the-tunnel HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"), answer
    assert b"GET /through-the-tunnel" in answer
    assert running.refusals() == []


async def test_plain_http_is_forwarded_in_origin_form_with_the_host_pinned(running: Running) -> None:
    port = running.upstream.port
    answer = await exchange(
        running.port,
        f"GET http://localhost:{port}/pool/file.deb HTTP/1.1\r\nHost: other.example.org\r\n"
        "Proxy-Connection: keep-alive\r\nUser-Agent: probe\r\n\r\n".encode(),
    )
    assert b"upstream says hello" in answer
    (head,) = running.upstream.heads
    assert head.startswith(f"GET /pool/file.deb HTTP/1.1\r\nHost: localhost:{port}\r\n".encode())
    assert b"other.example.org" not in head and b"Proxy-Connection" not in head
    assert b"User-Agent: probe" in head


@pytest.mark.parametrize(
    ("request_line", "reason"),
    [
        ("CONNECT evil.example.net:443", "'evil.example.net' is not on the allow-list"),
        ("CONNECT pkgs.example.org:22", "port 22 of host 'pkgs.example.org' is not allowed"),
        ("CONNECT pkgs.example.org:443", "resolves to a refused address: 127.0.0.1 is loopback"),
        ("CONNECT meta.example.org:80", "169.254.169.254 is link-local"),
        ("GET http://meta.example.org/latest/", "169.254.169.254 is link-local"),
        ("CONNECT mixed.example.org:443", "10.0.0.5 is private"),
        ("CONNECT garbage.example.org:443", "not an IP address"),
        ("CONNECT 127.0.0.1:{port}", "'127.0.0.1' is not on the allow-list"),
        ("CONNECT [::1]:443", "IPv6 targets are not allowed"),
    ],
)
async def test_refused_targets_get_403_and_one_log_line(
    running: Running, request_line: str, reason: str
) -> None:
    line = request_line.format(port=running.upstream.port)
    answer = await exchange(running.port, f"{line} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status_of(answer) == 403 and reason.encode() in answer, answer
    (refusal,) = running.refusals()
    assert reason in str(refusal["reason"]) and refusal["peer"] == "127.0.0.1"
    assert running.upstream.connections == 0  # nothing reached the upstream


async def test_link_local_answers_are_refused_before_any_connect(upstream: Upstream) -> None:
    """Even an operator's internal entry never reaches a link-local address (cloud metadata lives there)."""
    dns = FakeDNS({"localhost": ["127.0.0.1"], "mirror.lan": ["169.254.10.10"]})
    running = await start_proxy(upstream, extra_hosts=("internal:mirror.lan:80",), dns=dns)
    try:
        answer = await exchange(running.port, b"GET http://mirror.lan/x HTTP/1.1\r\n\r\n")
        assert status_of(answer) == 403 and b"link-local" in answer
        assert dns.asked == ["mirror.lan"]
    finally:
        await running.proxy.close()


async def test_peers_outside_the_build_pool_are_cut_off_without_an_answer(upstream: Upstream) -> None:
    running = await start_proxy(upstream, peers=[ipaddress.ip_network("10.214.0.0/16")])
    try:
        answer = await exchange(running.port, f"CONNECT localhost:{upstream.port} HTTP/1.1\r\n\r\n".encode())
        assert answer == b""
        assert [r["reason"] for r in running.refusals()] == ["peer not allowed"]
        assert upstream.connections == 0
    finally:
        await running.proxy.close()


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET http://localhost/ HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET http://localhost/ HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n", 431),
        (b"GET http://localhost/ HTTP/1.1\r\nX: \xff\xfe\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS sent to a plain proxy
        (b"GET /origin-form HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        (b"GET http://localhost/ HTTP/2.0\r\n\r\n", 400),
        (b"CONNECT localhost HTTP/1.1\r\n\r\n", 400),
        (b"GET http://localhost/ HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"GET http://localhost/ HTTP/1.1\r\n folded\r\n\r\n", 400),
    ],
)
async def test_malformed_or_oversized_heads_are_answered_and_closed(
    running: Running, data: bytes, status: int
) -> None:
    answer = await exchange(running.port, data)
    assert status_of(answer) == status, answer
    assert running.upstream.connections == 0


async def test_slow_heads_idle_tunnels_and_connection_floods_are_bounded(upstream: Upstream) -> None:
    limits = ProxyLimits(max_connections=2, head_timeout_s=0.5, idle_timeout_s=0.5)
    running = await start_proxy(upstream, limits=limits)
    try:
        # A client that never finishes its head is answered 408 once the head deadline passes.
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(b"GET http://localhost/ HTTP/1.1\r\n")
        assert status_of(await asyncio.wait_for(reader.read(), 3)) == 408
        writer.close()
        # Two connections held open fill the limit: a third is closed at once (the per-client limit
        # is tested below).
        held = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        third_reader, third_writer = await asyncio.open_connection("127.0.0.1", running.port)
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(third_reader.read(), 3) == b""
        third_writer.close()
        assert "too many connections" in [r["reason"] for r in running.refusals()]
        for _, held_writer in held:
            held_writer.close()
        await asyncio.sleep(0.6)  # the held ones end at their head deadline too
        # A tunnel nobody uses is closed after the idle time.
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(f"CONNECT localhost:{upstream.port} HTTP/1.1\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert loop.time() - started < 3
        writer.close()
        assert running.proxy.active <= 1
    finally:
        await running.proxy.close()


async def test_slow_or_failing_dns_is_a_gateway_error_not_a_crash(upstream: Upstream) -> None:
    dns = FakeDNS({"localhost": ["127.0.0.1"]}, slow=frozenset({"slow.example.org"}))
    running = await start_proxy(
        upstream,
        extra_hosts=("slow.example.org", "gone.example.org"),
        limits=ProxyLimits(dns_timeout_s=0.3),
        dns=dns,
    )
    try:
        assert (
            status_of(await exchange(running.port, b"CONNECT slow.example.org:443 HTTP/1.1\r\n\r\n")) == 504
        )
        assert (
            status_of(await exchange(running.port, b"CONNECT gone.example.org:443 HTTP/1.1\r\n\r\n")) == 502
        )
    finally:
        await running.proxy.close()


async def test_upstream_that_refuses_is_a_bad_gateway(upstream: Upstream) -> None:
    await upstream.close()  # nothing listens on its port any more
    running = await start_proxy(upstream)
    try:
        answer = await exchange(running.port, f"CONNECT localhost:{upstream.port} HTTP/1.1\r\n\r\n".encode())
        assert status_of(answer) == 502 and b"cannot connect" in answer
    finally:
        await running.proxy.close()


async def test_refusal_log_lines_are_sanitised_and_bounded_in_a_flood(upstream: Upstream) -> None:
    running = await start_proxy(upstream, limits=ProxyLimits(log_burst=3, log_window_s=60))
    try:
        hostile = "ev\x1bil\x7f" + "x" * 300 + ".example.org"
        for _ in range(6):
            answer = await exchange(running.port, f"CONNECT {hostile}:443 HTTP/1.1\r\n\r\n".encode("latin-1"))
            assert status_of(answer) == 403
        refusals = running.refusals()
        assert len(refusals) == 3  # the rest are counted for the next window's summary line
        text = json.dumps(refusals)
        assert "\\u001b" not in text and "\\u007f" not in text
        assert all(len(str(r["host"])) <= 80 for r in refusals)
        # The proxy still serves an honest request after all that.
        answer = await exchange(
            running.port, f"GET http://localhost:{upstream.port}/ok HTTP/1.1\r\n\r\n".encode()
        )
        assert b"upstream says hello" in answer
    finally:
        await running.proxy.close()


async def test_one_client_cannot_take_every_connection(upstream: Upstream) -> None:
    limits = ProxyLimits(max_connections=10, max_connections_per_peer=2, head_timeout_s=2)
    running = await start_proxy(upstream, limits=limits)
    try:
        held = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert await exchange(running.port, b"GET http://localhost/ HTTP/1.1\r\n\r\n") == b""
        assert "too many connections from this peer" in [r["reason"] for r in running.refusals()]
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        # Once they are gone the same client is served again.
        answer = await exchange(
            running.port, f"GET http://localhost:{upstream.port}/ HTTP/1.1\r\n\r\n".encode()
        )
        assert b"upstream says hello" in answer
    finally:
        await running.proxy.close()
