"""Build network ``proxy``: each build on an internal network of its own, out only through the proxy.

Pure helpers first, then builds on the project's dockerd. Every listener is the test's own: an
"allowed" HTTP upstream (bound on all host addresses, so that only the firewall and the proxy keep a
build step from reaching it directly), a 198.51.100.x address on an interface the test creates, and a
second build serving inside its own network. Build steps print one ``VV-RESULT`` JSON line and fail on
purpose, so the outcome is read from the build log that ``BuildFailed`` carries. Needs the firewall of
``scripts/dockerd.sh`` (re-run it after an upgrade: it adds the build rules to a running daemon).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import http.server
import ipaddress
import json
import random
import re
import secrets
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from evaluation.errors import BuildFailed
from evaluation.sandbox.build_network import (
    LABEL_BUILD_NETWORK,
    BuildEgress,
    BuildNetworks,
    gateway_of,
    pick_subnet,
    proxy_build_args,
)
from evaluation.sandbox.docker_sandbox import DockerSandbox, SandboxConfig, ownership_filter
from evaluation.types import Submission
from tests.listeners import Listener, documentation_address

PROJECT_BRIDGE_ADDRESS = "10.212.0.1"  # scripts/dockerd.sh's VV_DOCKER_BIP on vvdocker0
REVISION = "feedfacefeedfacefeedfacefeedfacefeedface"


# ------------------------------------------------------------------------------------- pure helpers


def test_subnets_are_random_slash_24s_of_the_pool_with_the_first_address_as_gateway() -> None:
    pool = ipaddress.IPv4Network("10.214.0.0/16")
    rng = random.Random(7)
    subnets = {pick_subnet(pool, rng) for _ in range(200)}
    assert len(subnets) > 100  # spread over the pool, not one fixed /24
    assert all(s.prefixlen == 24 and s.subnet_of(pool) for s in subnets)
    assert gateway_of(ipaddress.IPv4Network("10.214.33.0/24")) == "10.214.33.1"
    assert pick_subnet(ipaddress.IPv4Network("10.9.8.0/24"), rng) == ipaddress.IPv4Network("10.9.8.0/24")


def test_proxy_build_args_name_the_gateway_in_every_spelling() -> None:
    args = proxy_build_args("10.214.5.1", 3199)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert args[name] == "http://10.214.5.1:3199"
    assert args["NO_PROXY"] == "localhost,127.0.0.1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"build_network": "host"}, "must be one of"),
        ({"build_subnet_pool": "8.8.0.0/16"}, "private IPv4 network"),
        ({"build_subnet_pool": "10.214.0.0/25"}, "/24 or larger"),
        ({"build_subnet_pool": "not-a-net"}, "not an IPv4 network"),
        ({"build_proxy_port": 0}, "not a TCP port"),
        ({"build_allowed_hosts": ("bad host",)}, "not a DNS name"),
    ],
)
def test_sandbox_config_refuses_bad_build_network_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SandboxConfig(**kwargs)


async def test_none_and_default_modes_make_no_network_and_start_no_proxy() -> None:
    for mode in ("none", "default"):
        networks = BuildNetworks(mode, pool="10.214.0.0/16", proxy_port=3199)
        egress = await networks.open(None, None, "unused", {})  # type: ignore[arg-type]
        assert (egress.network_mode, egress.build_args, egress.network_id) == (mode, {}, None)
        assert networks.proxy is None


def test_a_build_that_failed_while_the_proxy_was_down_or_restarted_is_our_failure() -> None:
    class Proxy:  # the one supervisor fact this needs (the real one is tested in test_egress_supervisor)
        def serving_since(self, starts: int) -> bool:
            return starts == 2

    networks = BuildNetworks("proxy", pool="10.214.0.0/16", proxy_port=3199)
    egress = BuildEgress(network_mode="n", network_id="id", proxy_starts=2)
    assert networks.proxy_failed_during(egress)  # no proxy at all
    networks._proxy = Proxy()  # type: ignore[assignment]
    assert not networks.proxy_failed_during(egress)
    assert networks.proxy_failed_during(dataclasses.replace(egress, proxy_starts=1))
    assert not networks.proxy_failed_during(BuildEgress(network_mode="none"))


# ------------------------------------------------------------------------------------- on Docker


class Upstream:
    """The test's "allowed" HTTP server, on every host address; remembers who connected."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        self.peers: list[str] = []
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.peers.append(self.client_address[0])
                body = f"allowed-file {upstream.token}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        # All addresses, on purpose: a direct connection from a build step would reach it if the
        # firewall let it; through the proxy it is reached as localhost.
        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = self.server.server_address[1]
        self._accepted: list[str] = []
        original = self.server.get_request

        def get_request() -> tuple[socket.socket, Any]:
            connection, address = original()
            self._accepted.append(address[0])
            return connection, address

        self.server.get_request = get_request  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> list[str]:
        """Source address of every connection accepted, requests or not."""
        return list(self._accepted)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def unassigned_address() -> str:
    """A documentation address no interface of this host carries (a packet to it would be forwarded)."""
    local = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    while True:
        address = f"198.51.100.{secrets.randbelow(250) + 2}"
        if f" {address}/" not in local:
            return address


@pytest.fixture
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    docker_client = docker.DockerClient(base_url=docker_host, timeout=60)
    yield docker_client
    docker_client.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def documentation_listener() -> Iterator[Listener]:
    """A listener on a 198.51.100.x address of an interface this test creates (and removes)."""
    with documentation_address("vvb") as address:
        listener = Listener(address)
        try:
            yield listener
        finally:
            listener.close()


@pytest.fixture
async def proxy_sandbox(sandbox_config: SandboxConfig, upstream: Upstream) -> AsyncIterator[DockerSandbox]:
    """A sandbox whose builds use the proxy, allowing only the test's upstream (as an internal host)."""
    config = dataclasses.replace(
        sandbox_config,
        build_network="proxy",
        build_allowed_hosts=(f"internal:localhost:{upstream.port}",),
    )
    sandbox = DockerSandbox(config)
    yield sandbox
    await sandbox.cleanup()
    await sandbox.close()


PROBES = r"""
import errno, json, os, socket, sys, time
from urllib.parse import urlsplit

proxy = urlsplit(os.environ.get("HTTP_PROXY", "http://0.0.0.0:1"))

def probe(host, port, timeout=2.0):
    s = socket.socket()
    s.settimeout(timeout)
    started = time.monotonic()
    try:
        s.connect((host, port))
        outcome = "connected"
    except socket.timeout:
        outcome = "blocked:timeout"
    except OSError as exc:
        outcome = "blocked:" + errno.errorcode.get(exc.errno, str(exc.errno))
    finally:
        s.close()
    return [outcome, round(time.monotonic() - started, 2)]

def via_proxy(request_line):
    try:
        s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
        s.sendall((request_line + "\r\nHost: x\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return data.decode("latin-1")[-300:]
    except OSError as exc:
        return "error " + repr(exc)

checks = __CHECKS__
results = {"gateway": proxy.hostname}
for name, (kind, *args) in checks.items():
    if kind == "probe":
        results[name] = probe(*args)
    elif kind == "probe_gateway":  # the gateway is only known inside the build, from HTTP_PROXY
        results[name] = probe(proxy.hostname, *args)
    else:
        results[name] = via_proxy(*args)
results["ipv6"] = open("/proc/net/if_inet6").read()
print("VV-RESULT " + json.dumps(results), flush=True)
sys.exit(__EXIT__)
"""


def python_step(script: str) -> str:
    """A RUN line running ``script`` with the base image's python3; unique, so no cached layer is reused."""
    script += f"\n# {secrets.token_hex(8)}\n"
    encoded = base64.b64encode(script.encode()).decode()
    return f"RUN python3 -c \"import base64; exec(base64.b64decode('{encoded}').decode())\"\n"


def probe_step(checks: dict[str, list[Any]], exit_code: int = 3) -> str:
    """A RUN line running the probe script with ``checks``, failing with ``exit_code`` afterwards."""
    return python_step(PROBES.replace("__CHECKS__", repr(checks)).replace("__EXIT__", str(exit_code)))


def write_repo(path: Path, body: str) -> Path:
    path.mkdir(parents=True)
    (path / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n" + body, encoding="utf-8")
    return path


def submission(uid: int, repo: str) -> Submission:
    return Submission(uid=uid, hotkey="5Test", repo_id=f"tester/{repo}", revision=REVISION)


def result_of(failure: BuildFailed) -> dict[str, Any]:
    """The ``VV-RESULT`` line of a failed build's log."""
    match = re.search(r"VV-RESULT (\{.*\})", str(failure))
    assert match, f"no VV-RESULT in the build log:\n{failure}"
    return dict(json.loads(match.group(1)))


async def build_result(sandbox: DockerSandbox, sub: Submission, repo: Path) -> dict[str, Any]:
    with pytest.raises(BuildFailed) as failed:
        await sandbox.start(sub, repo)
    return result_of(failed.value)


def build_networks(client: docker.DockerClient, validator_id: str) -> list[Any]:
    filters = ownership_filter(validator_id)
    filters["label"].append(f"{LABEL_BUILD_NETWORK}=true")
    return client.networks.list(filters=filters)


@pytest.mark.docker
async def test_build_step_reaches_only_the_allowed_upstream_and_only_through_the_proxy(
    proxy_sandbox: DockerSandbox,
    client: docker.DockerClient,
    upstream: Upstream,
    documentation_listener: Listener,
    tmp_path: Path,
) -> None:
    port = proxy_sandbox.config.build_proxy_port
    doc = documentation_listener
    # The listeners work: the host itself reaches them.
    with socket.create_connection((doc.address, doc.port), timeout=3):
        pass
    checks = {
        "fetch": ["proxy", f"GET http://localhost:{upstream.port}/file.txt HTTP/1.1"],
        "direct_gateway": ["probe_gateway", upstream.port],
        "direct_bridge": ["probe", PROJECT_BRIDGE_ADDRESS, upstream.port],
        "proxy_port_on_bridge": ["probe", PROJECT_BRIDGE_ADDRESS, port],
        "documentation_address": ["probe", doc.address, doc.port],
        "unassigned_address": ["probe", unassigned_address(), 443],
        "documentation_via_proxy": ["proxy", f"CONNECT {doc.address}:{doc.port} HTTP/1.1"],
        "other_name_via_proxy": ["proxy", "CONNECT evil.example.org:443 HTTP/1.1"],
    }
    repo = write_repo(tmp_path / "repo", probe_step(checks))
    result = await build_result(proxy_sandbox, submission(11, "probe"), repo)

    gateway = ipaddress.IPv4Address(result["gateway"])
    assert gateway in ipaddress.IPv4Network(proxy_sandbox.config.build_subnet_pool)
    # Through the proxy: the file arrives, and the upstream saw only the proxy, on loopback.
    assert f"allowed-file {upstream.token}" in result["fetch"], result["fetch"]
    assert upstream.accepted == ["127.0.0.1"], upstream.accepted
    # Directly: the same upstream on the gateway and on the project bridge, and the proxy port on the
    # bridge, are dropped by the host guard; they time out.
    for name in ("direct_gateway", "direct_bridge", "proxy_port_on_bridge"):
        assert result[name][0].startswith("blocked"), (name, result[name])
    # The documentation address is the host's own (on the test's interface): the host guard drops it.
    assert result["documentation_address"][0].startswith("blocked"), result["documentation_address"]
    assert doc.accepted == 1  # only the host's own check above
    # No route out: an address that is nobody's here would be forwarded, and is rejected at once.
    outcome, seconds = result["unassigned_address"]
    assert outcome in ("blocked:ENETUNREACH", "blocked:EHOSTUNREACH"), outcome
    assert seconds < 1.5
    # Through the proxy, neither an address nor a name that is not listed.
    assert (
        " 403 " in result["documentation_via_proxy"]
        and "not on the allow-list" in result["documentation_via_proxy"]
    )
    assert " 403 " in result["other_name_via_proxy"]
    assert result["ipv6"] == ""  # not even a link-local IPv6 address inside the build
    assert build_networks(client, proxy_sandbox.config.validator_id) == []  # removed after the failure


LISTEN_STEP = r"""
import socket, sys, time
server = socket.create_server(("0.0.0.0", 7777))
server.settimeout(0.2)
own = socket.create_connection(("127.0.0.1", 7777), timeout=2)  # the listener works: its own call
accepted = []
deadline = time.monotonic() + __SECONDS__
while time.monotonic() < deadline:
    try:
        connection, address = server.accept()
    except socket.timeout:
        continue
    accepted.append(address[0])
    connection.close()
print("VV-RESULT {\"accepted\": %s}" % repr(accepted).replace("'", '"'), flush=True)
sys.exit(3)
"""


def listen_step(seconds: float) -> str:
    return python_step(LISTEN_STEP.replace("__SECONDS__", str(seconds)))


async def build_step_address(client: docker.DockerClient, validator_id: str, timeout_s: float = 60) -> Any:
    """The network of this validator's running build and the address of the step container on it."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        for network in await asyncio.to_thread(build_networks, client, validator_id):
            await asyncio.to_thread(network.reload)
            for endpoint in (network.attrs.get("Containers") or {}).values():
                return network, endpoint["IPv4Address"].split("/")[0]
        await asyncio.sleep(0.2)
    raise AssertionError("no build step appeared on a build network")


@pytest.mark.docker
async def test_a_build_cannot_reach_another_build_and_networks_are_internal_without_ipv6(
    proxy_sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    validator_id = proxy_sandbox.config.validator_id
    listening = asyncio.create_task(
        build_result(proxy_sandbox, submission(21, "listener"), write_repo(tmp_path / "b", listen_step(12)))
    )
    try:
        network, address = await build_step_address(client, validator_id)
        attrs = network.attrs
        (ipam,) = attrs["IPAM"]["Config"]
        assert attrs["Internal"] is True and attrs["EnableIPv6"] is False
        assert ipaddress.IPv4Network(ipam["Subnet"]).subnet_of(ipaddress.IPv4Network("10.214.0.0/16"))
        assert ipam["Gateway"] == gateway_of(ipaddress.IPv4Network(ipam["Subnet"]))
        assert attrs["Labels"]["voice-validator.uid"] == "21"
        checks = {"other_build": ["probe", address, 7777], "other_gateway": ["probe", ipam["Gateway"], 7777]}
        probing = await build_result(
            proxy_sandbox, submission(22, "prober"), write_repo(tmp_path / "a", probe_step(checks))
        )
    finally:
        listened = await listening
    assert probing["other_build"][0] in ("blocked:ENETUNREACH", "blocked:EHOSTUNREACH"), probing
    assert probing["other_gateway"][0].startswith("blocked"), probing
    assert probing["gateway"] != ipam["Gateway"]  # each build had a network of its own
    assert listened["accepted"] == ["127.0.0.1"]  # its own connection only; nothing from the other build
    assert build_networks(client, validator_id) == []


@pytest.mark.docker
async def test_successful_build_fetches_through_the_proxy_and_keeps_no_proxy_setting(
    proxy_sandbox: DockerSandbox, client: docker.DockerClient, upstream: Upstream, tmp_path: Path
) -> None:
    # The proxy is named explicitly: the build's NO_PROXY (localhost) would otherwise bypass it.
    fetch = (
        "import os, urllib.request\n"
        "os.environ.pop('no_proxy', None)\n"
        "os.environ.pop('NO_PROXY', None)\n"
        "handler = urllib.request.ProxyHandler({'http': os.environ['HTTP_PROXY']})\n"
        "opener = urllib.request.build_opener(handler)\n"
        f"body = opener.open('http://localhost:{upstream.port}/f', timeout=10).read()\n"
        "open('/fetched.txt', 'wb').write(body)\n"
    )
    body = python_step(fetch)
    # apt's own HTTP client, as `apt-get` uses it behind a proxy (absolute-form requests).
    body += (
        f"RUN no_proxy= NO_PROXY= /usr/lib/apt/apt-helper download-file "
        f"http://localhost:{upstream.port}/apt/{secrets.token_hex(4)} /fetched-by-apt.txt\n"
    )
    repo = write_repo(tmp_path / "repo", body)
    docker_client = await proxy_sandbox._docker()
    image_id = await proxy_sandbox._image_for(docker_client, submission(31, "fetcher"), repo)
    image = client.images.get(image_id)
    container = client.containers.create(image_id, command=["cat", "/fetched.txt", "/fetched-by-apt.txt"])
    try:
        container.start()
        container.wait(timeout=30)
        assert container.logs().decode().split() == ["allowed-file", upstream.token] * 2
    finally:
        container.remove(force=True)
    # Predefined proxy args stay out of the image: neither its history nor its environment names them.
    proxy_url = re.compile(r"http://10\.214\.\d+\.1:" + str(proxy_sandbox.config.build_proxy_port))
    history = json.dumps(client.api.history(image_id))
    assert not proxy_url.search(history) and "HTTP_PROXY=" not in history.upper()
    environment = image.attrs["Config"].get("Env") or []
    assert not [v for v in environment if v.upper().startswith(("HTTP_PROXY=", "HTTPS_PROXY="))]
    assert build_networks(client, proxy_sandbox.config.validator_id) == []


@pytest.mark.docker
async def test_cancelled_build_removes_its_network(
    proxy_sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    validator_id = proxy_sandbox.config.validator_id
    repo = write_repo(tmp_path / "repo", f"RUN sleep 120 # {secrets.token_hex(4)}\n")
    started = asyncio.create_task(proxy_sandbox.start(submission(41, "sleeper"), repo))
    await build_step_address(client, validator_id)
    started.cancel()
    with pytest.raises(asyncio.CancelledError):
        await started
    assert build_networks(client, validator_id) == []
