"""What the build egress proxy lets through: host rules, port rules and the address check (pure).

An entry of the allow-list is ``[internal:]HOST[:PORT]``:

* ``HOST`` is an exact DNS name (``pkgs.example.org``), a suffix rule (``*.example.org``: any name
  *below* ``example.org``, not the name itself) or an IPv4 literal (only ever matched by itself).
* Without ``:PORT`` the entry allows ports 80 and 443; with it, that port only.
* ``internal:`` marks a host the operator runs on a private address (a LAN mirror, a test server on
  127.0.0.1). Only such entries may resolve to loopback or private addresses, and they must name their
  port. Link-local, multicast and unspecified addresses are refused even then: cloud metadata endpoints
  live on link-local addresses and hand out credentials, and no package mirror needs one.

Every name an entry allows is resolved by the proxy, and each resolved address is checked before the
proxy connects to it (and it connects to that checked address, never resolving again), so a public
name whose DNS answer points into the LAN is refused too.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_PORTS = frozenset({80, 443})
BUILD_SUBNET_PREFIX = 24  # each build network's size, cut from the build address pool
INTERNAL_PREFIX = "internal:"
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_MAX_NAME = 253
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_LOG_SAFE_RE = re.compile(r"[^A-Za-z0-9._:*/\[\]-]")
_LOG_MAX = 80


class Refused(Exception):
    """A request the policy does not allow; ``reason`` is safe to log and to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class HostRule:
    """One allow-list entry: a name (or ``*.`` suffix, or IPv4 literal), its ports, internal or not."""

    host: str
    ports: frozenset[int]
    wildcard: bool = False
    internal: bool = False
    literal: bool = False

    def __str__(self) -> str:
        host = f"*.{self.host}" if self.wildcard else self.host
        ports = "" if self.ports == DEFAULT_PORTS else ":" + ",".join(str(p) for p in sorted(self.ports))
        return f"{INTERNAL_PREFIX if self.internal else ''}{host}{ports}"


def log_safe(text: str) -> str:
    """``text`` (a client's host name, say) reduced to characters safe in a log line, and short."""
    cleaned = _LOG_SAFE_RE.sub("?", text)
    return cleaned if len(cleaned) <= _LOG_MAX else cleaned[: _LOG_MAX - 3] + "..."


def normalize_name(host: str) -> str:
    """``host`` as a lower-case DNS name without a trailing dot; ValueError if it is not one."""
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > _MAX_NAME or not all(_LABEL_RE.match(label) for label in name.split(".")):
        raise ValueError(f"{log_safe(host)!r} is not a DNS name")
    return name


def ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """``host`` as an IPv4 address when it is written as one (dotted decimal), else None."""
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        return None


def canonical_host(host: str) -> str:
    """A client's host as the allow-list compares it (normalized name or IPv4); ``Refused`` otherwise."""
    literal = ipv4_literal(host)
    if literal is not None:
        return str(literal)
    try:
        return normalize_name(host)
    except ValueError:
        raise Refused(f"host {log_safe(host)!r} is not a DNS name or an IPv4 address") from None


def parse_port(text: str, where: str) -> int:
    """A TCP port number written in decimal; ValueError naming ``where`` otherwise."""
    if not text.isdigit() or len(text) > 5 or not 0 < int(text) < 65536:
        raise ValueError(f"{where}: {log_safe(text)!r} is not a TCP port")
    return int(text)


def parse_host_entry(entry: str) -> HostRule:
    """Parse one allow-list entry (see the module docstring); ValueError saying what is wrong."""
    text = entry.strip()
    internal = text.startswith(INTERNAL_PREFIX)
    if internal:
        text = text[len(INTERNAL_PREFIX) :]
    if text.startswith("[") or text.count(":") > 1:
        raise ValueError(f"allowed host {log_safe(entry)!r}: IPv6 is never allowed for builds")
    host, colon, port_text = text.partition(":")
    ports = (
        frozenset({parse_port(port_text, f"allowed host {log_safe(entry)!r}")}) if colon else DEFAULT_PORTS
    )
    if internal and not colon:
        raise ValueError(f"allowed host {log_safe(entry)!r}: an internal host must name its port")
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    literal = ipv4_literal(host)
    if literal is not None:
        if wildcard:
            raise ValueError(f"allowed host {log_safe(entry)!r}: '*.' applies to names, not addresses")
        return HostRule(str(literal), ports, internal=internal, literal=True)
    try:
        name = normalize_name(host)
    except ValueError as exc:
        raise ValueError(f"allowed host {log_safe(entry)!r}: {exc}") from None
    return HostRule(name, ports, wildcard=wildcard, internal=internal)


def parse_host_entries(entries: Iterable[str]) -> tuple[HostRule, ...]:
    """Parse every entry; the first bad one raises ValueError."""
    return tuple(parse_host_entry(entry) for entry in entries)


class AllowList:
    """The rules one proxy enforces, looked up by the host and port a client asked for."""

    def __init__(self, rules: Iterable[HostRule]) -> None:
        self._exact: dict[str, list[HostRule]] = {}
        self._suffixes: dict[str, list[HostRule]] = {}
        for rule in rules:
            table = self._suffixes if rule.wildcard else self._exact
            table.setdefault(rule.host, []).append(rule)

    @property
    def empty(self) -> bool:
        """Whether nothing at all is allowed."""
        return not self._exact and not self._suffixes

    def _candidates(self, host: str) -> list[HostRule]:
        """Rules naming ``host``: exact ones first, then suffix rules from the longest suffix down."""
        found = list(self._exact.get(host, ()))
        if ipv4_literal(host) is None:
            labels = host.split(".")
            for start in range(1, len(labels)):
                found.extend(self._suffixes.get(".".join(labels[start:]), ()))
        return found

    def match(self, host: str, port: int) -> HostRule:
        """The rule allowing ``host:port``; ``Refused`` saying why there is none.

        ``host`` is what the client sent: IPv4 literals match only entries naming that literal, names
        are compared case-insensitively without a trailing dot.
        """
        key = canonical_host(host)
        candidates = self._candidates(key)
        if not candidates:
            raise Refused(f"host {log_safe(key)!r} is not on the allow-list")
        for rule in candidates:
            if port in rule.ports:
                return rule
        raise Refused(f"port {port} of host {log_safe(key)!r} is not allowed")


def address_refusal(address: str, *, internal: bool = False) -> str | None:
    """Why the proxy must not connect to ``address`` (one resolved address), or None when it may.

    Only public IPv4 unicast addresses pass, unless ``internal`` (an ``internal:`` entry of the
    operator), which also lets loopback and private addresses through, never link-local ones.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{log_safe(address)} is not an IP address"
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip.is_multicast or ip.is_unspecified or ip == _BROADCAST:
        return f"{ip} is not a unicast address"
    if internal:
        return None
    if ip.version == 6:
        return f"{ip} is IPv6"
    if ip.is_loopback:
        return f"{ip} is loopback"
    if ip in _SHARED_ADDRESS_SPACE:
        return f"{ip} is in the shared address space"
    if ip.is_private:
        return f"{ip} is private"
    if ip.is_reserved or not ip.is_global:
        return f"{ip} is reserved"
    return None


def build_pool(text: str) -> ipaddress.IPv4Network:
    """The build address pool: private IPv4, /24 or larger; ValueError naming what is wrong."""
    try:
        pool = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise ValueError(f"build subnet pool {text!r} is not an IPv4 network: {exc}") from None
    if pool.prefixlen > BUILD_SUBNET_PREFIX or not any(pool.subnet_of(net) for net in _RFC1918):
        raise ValueError(
            f"build subnet pool {text!r} must be a private IPv4 network (RFC 1918) of /24 or larger"
        )
    return pool
