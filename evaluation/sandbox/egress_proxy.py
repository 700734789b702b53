"""The build egress proxy: a small allow-listing HTTP forward proxy, run as a process of its own.

Build steps have no route out of their network (see ``build_network``); their only way out is this
proxy on the network's gateway, named by the build's ``HTTP_PROXY`` / ``HTTPS_PROXY``. It speaks:

* ``CONNECT host:port`` (HTTPS, as pip and curl use a proxy): a tunnel once the target is allowed;
* absolute-form plain HTTP (``GET http://host/path HTTP/1.1``, as apt uses a proxy): one request per
  connection, forwarded in origin form with ``Host`` set to the target (a client cannot reach another
  virtual host of the same address), hop-by-hop headers dropped and ``Connection: close``.

Anything else is refused. Who may connect is checked first (``--allow-peer``: the build networks'
address pool; any other peer has its connection closed without an answer), then the target against the
allow-list and the address check of ``egress_policy``. Everything a client controls is bounded: the
request head's size and header count, the time to send it, connections open at once (in all and per
client address), idle time,
connect and DNS time, and the total time of one connection. One JSON line per event on stdout:
``listening`` once it accepts connections, ``refused`` for each refused request (host and reason, with
the client's text reduced to safe characters; at most a burst per window, then a count), ``error``
before a fatal exit. ``--exit-with-stdin`` ends the process when its stdin closes, so a proxy whose
validator died does not keep the port.

    python -m evaluation.sandbox.egress_proxy --listen 0.0.0.0:3199 --allow-peer 10.214.0.0/16 \\
        --allow-host pkgs.example.org --allow-host '*.example.net'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import stat
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from evaluation.sandbox.egress_policy import (
    AllowList,
    HostRule,
    Refused,
    address_refusal,
    canonical_host,
    log_safe,
    parse_host_entries,
    parse_port,
)

Emit = Callable[[dict[str, object]], None]
Resolve = Callable[[str, int, int], Awaitable[list[str]]]

_CHUNK = 64 * 1024
_UPSTREAM_BUFFER = 256 * 1024
_MAX_ADDRESSES = 8
_MAX_LOG_LINE = 1000
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_METHOD_RE = re.compile(r"^[A-Z]{1,16}$")
# Headers meant for this hop only (RFC 9110, 7.6.1), plus the proxy's own.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
    "te", "trailer", "upgrade", "host",
})  # fmt: skip
_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class ProxyLimits:
    """Bounds on what any one client can make the proxy hold or wait for."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_connections: int = 128
    # One build must not take every connection from the builds running beside it.
    max_connections_per_peer: int = 32
    head_timeout_s: float = 20.0
    idle_timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    dns_timeout_s: float = 10.0
    max_connection_s: float = 3600.0
    # Refusal log lines per window; beyond that they are counted and reported once per window.
    log_burst: int = 50
    log_window_s: float = 10.0


class _Reply(Exception):
    """Answer the client with ``status`` and ``reason`` and close; ``refusal`` also logs it."""

    def __init__(self, status: int, reason: str, *, refusal: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.refusal = refusal


@dataclass(frozen=True)
class Head:
    """A parsed request head: request line and header fields in their order."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]


def parse_head(raw: bytes, max_headers: int) -> Head:
    """Parse a request head (up to and including the blank line); ``_Reply(400)`` when malformed."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _Reply(400, "request head is not ASCII") from None
    lines = text[:-4].split("\r\n") if text.endswith("\r\n\r\n") else []
    if not lines:
        raise _Reply(400, "request head is incomplete")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _METHOD_RE.match(parts[0]) or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise _Reply(400, "malformed request line")
    if len(lines) - 1 > max_headers:
        raise _Reply(431, f"more than {max_headers} header fields")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN_RE.match(name) or any(c < " " and c != "\t" for c in value):
            raise _Reply(400, "malformed header field")
        headers.append((name, value.strip(" \t")))
    return Head(parts[0], parts[1], parts[2], tuple(headers))


def split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` as (host, port); ``_Reply(400)`` for user info, IPv6 literals or a bad port."""
    if not authority or "@" in authority:
        raise _Reply(400, "malformed target authority")
    if authority.startswith("["):
        raise _Reply(403, "IPv6 targets are not allowed", refusal=True)
    host, colon, port_text = authority.partition(":")
    if not colon:
        if default_port is None:
            raise _Reply(400, "CONNECT target needs a port")
        return host, default_port
    try:
        return host, parse_port(port_text, "target")
    except ValueError:
        raise _Reply(400, "malformed target port") from None


def absolute_target(target: str) -> tuple[str, int, str]:
    """An absolute-form ``http://`` target as (host, port, origin-form path); ``_Reply`` otherwise."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() != "http":
        raise _Reply(400, "only CONNECT and absolute http:// requests are proxied")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "#" in path:
        raise _Reply(400, "a request target carries no fragment")
    host, port = split_authority(authority, 80)
    return host, port, path if path.startswith("/") else "/" + path


def forward_head(head: Head, origin: str, authority: str) -> bytes:
    """The request head sent upstream for a plain-HTTP request (see the module docstring)."""
    named_in_connection = {
        token.strip().lower()
        for name, value in head.headers
        if name.lower() in ("connection", "proxy-connection")
        for token in value.split(",")
    }
    kept = [
        f"{name}: {value}"
        for name, value in head.headers
        if name.lower() not in _HOP_BY_HOP and name.lower() not in named_in_connection
    ]
    lines = [f"{head.method} {origin} HTTP/1.1", f"Host: {authority}", *kept, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def reply_bytes(status: int, reason: str) -> bytes:
    """A complete, closing HTTP answer whose body names ``reason`` (already safe for the client)."""
    body = f"egress proxy: {reason}\n".encode("ascii", "replace")
    head = (
        f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def stdout_emitter(stream: TextIO) -> Emit:
    """Write each event as one JSON line; a line the pipe cannot take now is dropped, never waited for.

    A validator that stops reading must not stall every build's downloads; lines are kept under the
    pipe's atomic write size, so a line is written whole or not at all.
    """
    fd = stream.fileno()
    # Only a pipe: a terminal's file description is shared with the shell, which must stay blocking.
    if stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.set_blocking(fd, False)

    def emit(event: dict[str, object]) -> None:
        line = json.dumps(event, ensure_ascii=True)[:_MAX_LOG_LINE] + "\n"
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(fd, line.encode("ascii"))

    return emit


async def close_writer(writer: asyncio.StreamWriter, timeout_s: float = 5.0) -> None:
    """Close after flushing what is buffered, within ``timeout_s``; a peer that does not read is cut off."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout_s)
    except Exception:
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


async def system_resolve(host: str, port: int, family: int) -> list[str]:
    """The addresses the system resolver gives for ``host``, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


class _RefusalLog:
    """Emits refusal events, at most ``burst`` per window; the rest are counted and reported."""

    def __init__(self, emit: Emit, burst: int, window_s: float) -> None:
        self._emit, self._burst, self._window_s = emit, burst, window_s
        self._window_start = 0.0
        self._count = 0
        self._suppressed = 0

    def __call__(self, now: float, event: dict[str, object]) -> None:
        if now - self._window_start >= self._window_s:
            if self._suppressed:
                self._emit({"event": "refused-suppressed", "count": self._suppressed})
            self._window_start, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count <= self._burst:
            self._emit({"event": "refused", **event})
        else:
            self._suppressed += 1


class EgressProxy:
    """The proxy server; ``start`` binds it, ``close`` stops it and drops open connections."""

    def __init__(
        self,
        allow: AllowList,
        peers: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
        *,
        limits: ProxyLimits | None = None,
        emit: Emit | None = None,
        resolve: Resolve = system_resolve,
    ) -> None:
        self._allow = allow
        self._peers = tuple(peers)
        self._limits = limits or ProxyLimits()
        self._emit: Emit = emit or (lambda event: None)
        self._refusals = _RefusalLog(self._emit, self._limits.log_burst, self._limits.log_window_s)
        self._resolve = resolve
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_peer: Counter[str] = Counter()

    @property
    def active(self) -> int:
        """Connections being served now."""
        return len(self._tasks)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0: any free port); returns the bound address."""
        self._server = await asyncio.start_server(
            self._serve, host, port, limit=self._limits.max_header_bytes, reuse_address=True
        )
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def _refuse(self, peer: str, host: str, port: int, reason: str) -> None:
        event: dict[str, object] = {"peer": peer, "host": log_safe(host), "port": port, "reason": reason}
        self._refusals(asyncio.get_running_loop().time(), event)

    def _peer_allowed(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._peers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) else "?"
        if not self._peer_allowed(peer):
            self._refuse(peer, "-", 0, "peer not allowed")
            writer.transport.abort()
            return
        if len(self._tasks) >= self._limits.max_connections:
            self._refuse(peer, "-", 0, "too many connections")
            writer.transport.abort()
            return
        if self._per_peer[peer] >= self._limits.max_connections_per_peer:
            self._refuse(peer, "-", 0, "too many connections from this peer")
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None  # a connection callback always runs in a task
        self._tasks.add(task)
        self._per_peer[peer] += 1
        try:
            async with asyncio.timeout(self._limits.max_connection_s):
                await self._exchange(reader, writer, peer)
        except TimeoutError:
            self._refuse(peer, "-", 0, f"connection open longer than {self._limits.max_connection_s:.0f}s")
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # the client or the upstream went away
        except Exception as exc:  # a bug here must cost one connection, never the proxy
            self._emit({"event": "connection-error", "peer": peer, "type": type(exc).__name__})
        finally:
            self._tasks.discard(task)
            self._per_peer[peer] -= 1
            if self._per_peer[peer] <= 0:
                del self._per_peer[peer]
            await close_writer(writer)

    async def _read_head(self, reader: asyncio.StreamReader) -> Head:
        limits = self._limits
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limits.head_timeout_s)
        except asyncio.LimitOverrunError:
            raise _Reply(431, f"request head larger than {limits.max_header_bytes} bytes") from None
        except TimeoutError:
            raise _Reply(408, f"no complete request head within {limits.head_timeout_s:.0f}s") from None
        return parse_head(raw, limits.max_headers)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        host, port = "-", 0
        try:
            head = await self._read_head(reader)
            if head.method == "CONNECT":
                host, port = split_authority(head.target, None)
                forward = None
            else:
                host, port, origin = absolute_target(head.target)
                forward = (head, origin)
            try:
                key = canonical_host(host)
                rule = self._allow.match(key, port)
            except Refused as exc:
                raise _Reply(403, exc.reason, refusal=True) from None
            addresses = await self._addresses(key, port, rule)
            up_reader, up_writer = await self._connect(addresses, port)
        except _Reply as answer:
            if answer.refusal:
                self._refuse(peer, host, port, answer.reason)
            with contextlib.suppress(OSError):
                writer.write(reply_bytes(answer.status, answer.reason))
            return
        try:
            if forward is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                authority = key if port == 80 else f"{key}:{port}"
                up_writer.write(forward_head(forward[0], forward[1], authority))
            await self._relay(reader, writer, up_reader, up_writer)
        finally:
            await close_writer(up_writer)

    async def _addresses(self, host: str, port: int, rule: HostRule) -> list[str]:
        """The checked addresses to try for an allowed host; ``_Reply`` when there are none."""
        if rule.literal:
            addresses = [rule.host]
        else:
            family = socket.AF_UNSPEC if rule.internal else socket.AF_INET
            try:
                found = await asyncio.wait_for(self._resolve(host, port, family), self._limits.dns_timeout_s)
            except TimeoutError:
                raise _Reply(504, f"resolving {host!r} timed out") from None
            except (OSError, UnicodeError, ValueError):
                raise _Reply(502, f"host {host!r} does not resolve") from None
            addresses = list(dict.fromkeys(found))
        if not addresses:
            raise _Reply(502, f"host {host!r} has no address")
        for address in addresses:
            refusal = address_refusal(address, internal=rule.internal)
            if refusal is not None:
                # One bad address refuses the host: a mixed answer is more likely an attack than a mirror.
                raise _Reply(403, f"host {host!r} resolves to a refused address: {refusal}", refusal=True)
        return addresses[:_MAX_ADDRESSES]

    async def _connect(
        self, addresses: list[str], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the first address that answers, within the connect deadline in total."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.connect_timeout_s
        for address in addresses:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(OSError, TimeoutError):
                return await asyncio.wait_for(
                    asyncio.open_connection(address, port, limit=_UPSTREAM_BUFFER), remaining
                )
        raise _Reply(502, f"cannot connect to the upstream on port {port}")

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Copy both ways until both sides finished, either side failed or both were idle too long."""
        loop = asyncio.get_running_loop()
        idle_s = self._limits.idle_timeout_s
        last = [loop.time()]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> bool:
            """True when ``src`` ended cleanly, False when the connection went idle."""
            while True:
                try:
                    data = await asyncio.wait_for(src.read(_CHUNK), idle_s)
                except TimeoutError:
                    if loop.time() - last[0] >= idle_s:
                        return False
                    continue
                if not data:
                    with contextlib.suppress(OSError):
                        if dst.can_write_eof():
                            dst.write_eof()
                    return True
                last[0] = loop.time()
                dst.write(data)
                await dst.drain()

        tasks = [
            asyncio.create_task(pump(client_reader, up_writer)),
            asyncio.create_task(pump(up_reader, client_writer)),
        ]
        try:
            pending: set[asyncio.Task[bool]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.exception() is not None or not t.result() for t in done):
                    break  # one side failed or went idle: the tunnel is over
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (IPv4) as (address, port); ValueError otherwise."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"--listen {text!r} must be ADDR:PORT")
    ipaddress.IPv4Address(host)
    return host, (int(port_text) if port_text == "0" else parse_port(port_text, "--listen"))


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluation.sandbox.egress_proxy", description=__doc__)
    parser.add_argument("--listen", required=True, help="ADDR:PORT to listen on (IPv4; port 0: any)")
    parser.add_argument("--allow-host", action="append", default=[], help="allow-list entry (repeat)")
    parser.add_argument("--allow-peer", action="append", default=[], help="client CIDR allowed (repeat)")
    parser.add_argument("--max-connections", type=int, default=ProxyLimits.max_connections)
    parser.add_argument("--idle-timeout", type=float, default=ProxyLimits.idle_timeout_s)
    parser.add_argument("--connect-timeout", type=float, default=ProxyLimits.connect_timeout_s)
    parser.add_argument("--max-connection-time", type=float, default=ProxyLimits.max_connection_s)
    parser.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin closes")
    return parser.parse_args(argv)


async def _wait_stdin_closed() -> None:
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while await reader.read(4096):
        pass


async def _run(args: argparse.Namespace, emit: Emit) -> int:
    try:
        host, port = parse_listen(args.listen)
        rules = parse_host_entries(args.allow_host)
        peers = [ipaddress.ip_network(cidr, strict=False) for cidr in args.allow_peer]
        if not peers:
            raise ValueError("at least one --allow-peer is needed")
        limits = ProxyLimits(
            max_connections=args.max_connections,
            idle_timeout_s=args.idle_timeout,
            connect_timeout_s=args.connect_timeout,
            max_connection_s=args.max_connection_time,
        )
    except ValueError as exc:
        emit({"event": "error", "reason": f"bad arguments: {exc}"})
        return 2
    proxy = EgressProxy(AllowList(rules), peers, limits=limits, emit=emit)
    try:
        bound_host, bound_port = await proxy.start(host, port)
    except OSError as exc:
        emit({"event": "error", "reason": f"cannot listen on {host}:{port}: {exc.strerror or exc}"})
        return 2
    emit({"event": "listening", "address": f"{bound_host}:{bound_port}", "rules": len(rules)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = asyncio.create_task(_wait_stdin_closed()) if args.exit_with_stdin else None
    if watcher is not None:
        watcher.add_done_callback(lambda _: stop.set())
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    await proxy.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy until SIGTERM (or stdin closes with ``--exit-with-stdin``); the exit status."""
    args = _arguments(argv)
    return asyncio.run(_run(args, stdout_emitter(sys.stdout)))


if __name__ == "__main__":
    sys.exit(main())
