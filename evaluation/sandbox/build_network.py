"""The network of one image build: a fresh internal network whose only way out is the egress proxy.

In ``proxy`` mode each build gets a bridge network of its own: ``internal`` (Docker's isolation rules
drop whatever would leave its subnet), IPv6 off, labelled like every other object of the validator, on
an explicit /24 picked at random from the build address pool (picked again when the daemon reports an
overlap, e.g. with another build that picked the same /24 a moment earlier). Build steps reach the
egress proxy on the network's gateway (the host's address on that bridge) through Docker's predefined
proxy build args; the host firewall of ``scripts/dockerd.sh`` drops every other connection from the pool
to the host and rejects whatever the pool would have routed elsewhere. The network is removed after the
build, whatever its outcome; one that cannot be removed yet carries the validator's labels, so
``cleanup()`` finds it.

Checked on the project's dockerd (20.10, legacy builder): a user-defined network is accepted as a
build's network mode. Build containers there have a default route via the gateway (hence the firewall),
no IPv6 address at all, and Docker's embedded DNS on 127.0.0.11, whose forwarding of outside names is
dropped by the isolation rules (a lookup fails after about 10 s); clients that use the proxy resolve
nothing themselves. Predefined proxy args stay out of ``docker history`` and the image config (unless
the Dockerfile declares them with ``ARG``) and out of the build cache key.

``none`` and ``default`` (the daemon's bridge: LAN, link-local addresses and the internet open to every
``RUN`` step; unsafe) pass straight through as the build's network mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import structlog

from evaluation.errors import InfrastructureError
from evaluation.sandbox.allowed_hosts import machine_allowed_hosts
from evaluation.sandbox.egress_policy import BUILD_SUBNET_PREFIX, build_pool
from evaluation.sandbox.egress_supervisor import EgressSupervisor, ProxyCommand

BUILD_NETWORK_MODES = ("proxy", "none", "default")
PROXY_ARG_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_ARG_NAMES = ("NO_PROXY", "no_proxy")
LABEL_BUILD_NETWORK = "voice-validator.build-network"
_CREATE_ATTEMPTS = 8
_REMOVE_ATTEMPTS = 10
_REMOVE_RETRY_S = 1.0
_slog = structlog.get_logger(__name__)

# DockerSandbox._blocking: runs a blocking docker call in a thread under a deadline.
Blocking = Callable[..., Awaitable[Any]]


def pick_subnet(pool: ipaddress.IPv4Network, rng: random.Random) -> ipaddress.IPv4Network:
    """A random /24 of ``pool``."""
    count = 2 ** (BUILD_SUBNET_PREFIX - pool.prefixlen)
    base = int(pool.network_address) + rng.randrange(count) * 2 ** (32 - BUILD_SUBNET_PREFIX)
    return ipaddress.IPv4Network((base, BUILD_SUBNET_PREFIX))


def gateway_of(subnet: ipaddress.IPv4Network) -> str:
    """The gateway address of a build network: its first host address."""
    return str(subnet.network_address + 1)


def proxy_build_args(gateway: str, port: int) -> dict[str, str]:
    """The predefined proxy build args pointing every build step at the proxy on ``gateway``."""
    url = f"http://{gateway}:{port}"
    args = dict.fromkeys(PROXY_ARG_NAMES, url)
    # A step talking to a server it started itself must not be sent to the proxy.
    args.update(dict.fromkeys(NO_PROXY_ARG_NAMES, "localhost,127.0.0.1"))
    return args


def _overlaps(exc: InfrastructureError) -> bool:
    """Whether a network creation failed only because its subnet is already used on the daemon."""
    cause = exc.__cause__
    return isinstance(cause, docker.errors.APIError) and "overlap" in str(cause.explanation or cause).lower()


@dataclass(frozen=True)
class BuildEgress:
    """How one build reaches out: its network mode, extra build args, the network made for it."""

    network_mode: str
    build_args: dict[str, str] = field(default_factory=dict)
    network_id: str | None = None
    gateway: str | None = None
    proxy_starts: int = 0


class BuildNetworks:
    """Makes each build's network and runs the egress proxy they share (owned by DockerSandbox).

    Nothing happens until the first build in ``proxy`` mode: then the allow-list is settled (the
    configured one, else this machine's, see ``allowed_hosts``) and the proxy started.
    """

    def __init__(
        self,
        mode: str,
        *,
        pool: str,
        proxy_port: int,
        allowed_hosts: tuple[str, ...] = (),
        hub_endpoint: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if mode not in BUILD_NETWORK_MODES:
            raise ValueError(f"build network {mode!r} must be one of {', '.join(BUILD_NETWORK_MODES)}")
        self._mode = mode
        self._pool = build_pool(pool)
        self._proxy_port = proxy_port
        self._allowed_hosts = allowed_hosts
        self._hub_endpoint = hub_endpoint
        self._rng = rng or random.SystemRandom()
        self._proxy: EgressSupervisor | None = None
        self._proxy_lock = asyncio.Lock()

    @property
    def proxy(self) -> EgressSupervisor | None:
        """The proxy's supervisor once a build needed it."""
        return self._proxy

    async def _running_proxy(self) -> EgressSupervisor:
        async with self._proxy_lock:
            if self._proxy is None:
                configured = bool(self._allowed_hosts)
                hosts = self._allowed_hosts or await asyncio.to_thread(
                    machine_allowed_hosts, self._hub_endpoint
                )
                source = "configured" if configured else "this machine's pip, apt and hub settings"
                _slog.info("build egress allow-list", source=source, hosts=list(hosts))
                if not hosts:
                    _slog.warning("build egress allow-list is empty: build steps can reach nothing")
                command = ProxyCommand(f"0.0.0.0:{self._proxy_port}", tuple(hosts), (str(self._pool),))
                self._proxy = EgressSupervisor(command)
            proxy = self._proxy
        await proxy.ensure_running()
        return proxy

    async def open(
        self, client: Any, blocking: Blocking, name: str, labels: Mapping[str, str]
    ) -> BuildEgress:
        """The egress of one build; in ``proxy`` mode its network exists and the proxy listens."""
        if self._mode != "proxy":
            return BuildEgress(network_mode=self._mode)
        proxy = await self._running_proxy()
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            subnet = pick_subnet(self._pool, self._rng)
            gateway = gateway_of(subnet)
            try:
                created = await blocking(
                    client.api.create_network,
                    name,
                    driver="bridge",
                    internal=True,
                    enable_ipv6=False,
                    labels={**labels, LABEL_BUILD_NETWORK: "true"},
                    check_duplicate=True,
                    ipam={"Driver": "default", "Config": [{"Subnet": str(subnet), "Gateway": gateway}]},
                    what="create the build's network",
                )
            except InfrastructureError as exc:
                if _overlaps(exc) and attempt < _CREATE_ATTEMPTS:
                    continue
                raise
            return BuildEgress(
                network_mode=name,
                build_args=proxy_build_args(gateway, self._proxy_port),
                network_id=str(created["Id"]),
                gateway=gateway,
                proxy_starts=proxy.starts,
            )
        raise AssertionError("unreachable: the last attempt raises")

    def proxy_failed_during(self, egress: BuildEgress) -> bool:
        """Whether the proxy died or restarted while this build ran (its failure is then ours)."""
        return egress.network_id is not None and (
            self._proxy is None or not self._proxy.serving_since(egress.proxy_starts)
        )

    async def release(self, client: Any, blocking: Blocking, egress: BuildEgress) -> None:
        """Remove the build's network; retried while a build step still holds it, bounded."""
        if egress.network_id is None:
            return
        for attempt in range(1, _REMOVE_ATTEMPTS + 1):
            try:
                await blocking(
                    client.api.remove_network, egress.network_id, what="remove the build's network"
                )
                return
            except docker.errors.NotFound:
                return
            except InfrastructureError as exc:
                if attempt == _REMOVE_ATTEMPTS:
                    # Labelled: cleanup() removes it once the daemon lets go of it.
                    _slog.warning(
                        "build network left for cleanup", network=egress.network_mode, error=str(exc)
                    )
                    return
            await asyncio.sleep(_REMOVE_RETRY_S)

    async def close(self) -> None:
        """Stop the proxy (a later build starts it again)."""
        async with self._proxy_lock:
            proxy, self._proxy = self._proxy, None
        if proxy is not None:
            with contextlib.suppress(Exception):
                await proxy.close()


def build_network_name(validator_id: str, uid: int, safe_rev: str) -> str:
    """Name of one build's network; a random token keeps concurrent builds apart."""
    return f"vv-{validator_id}-uid{uid}-{safe_rev}-{secrets.token_hex(4)}-build"
