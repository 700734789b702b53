"""The build egress proxy's policy: allow-list entries, host and port matching, the address check."""

from __future__ import annotations

import pytest

from evaluation.sandbox.egress_policy import (
    DEFAULT_PORTS,
    AllowList,
    Refused,
    address_refusal,
    canonical_host,
    log_safe,
    parse_host_entries,
    parse_host_entry,
)


def test_entries_parse_names_suffixes_ports_literals_and_internal_hosts() -> None:
    plain = parse_host_entry("Pkgs.Example.ORG.")
    assert (plain.host, plain.ports, plain.wildcard, plain.internal) == (
        "pkgs.example.org",
        DEFAULT_PORTS,
        False,
        False,
    )
    suffix = parse_host_entry("*.example.net:8443")
    assert (suffix.host, suffix.ports, suffix.wildcard) == ("example.net", frozenset({8443}), True)
    literal = parse_host_entry("203.0.113.7")
    assert literal.literal and literal.host == "203.0.113.7"
    internal = parse_host_entry("internal:localhost:8080")
    assert (internal.host, internal.ports, internal.internal) == ("localhost", frozenset({8080}), True)
    assert str(internal) == "internal:localhost:8080" and str(suffix) == "*.example.net:8443"


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "not a DNS name"),
        ("pkgs example.org", "not a DNS name"),
        ("pkgs.example.org:0", "not a TCP port"),
        ("pkgs.example.org:99999", "not a TCP port"),
        ("pkgs.example.org:http", "not a TCP port"),
        ("internal:localhost", "must name its port"),
        ("*.203.0.113.7", "not addresses"),
        ("[2001:db8::1]:443", "IPv6"),
        ("2001:db8::1", "IPv6"),
        ("-bad-.example.org", "not a DNS name"),
        ("a" * 64 + ".example.org", "not a DNS name"),
        ("*", "not a DNS name"),
    ],
)
def test_bad_entries_are_refused_with_the_reason(entry: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_host_entry(entry)


def test_exact_names_match_case_insensitively_on_their_ports_only() -> None:
    allow = AllowList(parse_host_entries(["pkgs.example.org", "mirror.example.org:8080"]))
    assert allow.match("PKGS.example.org.", 443).host == "pkgs.example.org"
    assert allow.match("pkgs.example.org", 80).ports == DEFAULT_PORTS
    assert allow.match("mirror.example.org", 8080).ports == frozenset({8080})
    with pytest.raises(Refused, match=r"port 22 of host 'pkgs\.example\.org' is not allowed"):
        allow.match("pkgs.example.org", 22)
    with pytest.raises(Refused, match="port 443"):
        allow.match("mirror.example.org", 443)
    with pytest.raises(Refused, match="not on the allow-list"):
        allow.match("evil.example.org", 443)
    with pytest.raises(Refused, match="not on the allow-list"):
        allow.match("sub.pkgs.example.org", 443)  # an exact entry covers no subdomain


def test_suffix_entries_cover_subdomains_not_the_name_itself() -> None:
    allow = AllowList(parse_host_entries(["*.example.net"]))
    assert allow.match("files.example.net", 443).wildcard
    assert allow.match("a.b.example.net", 80).wildcard
    for host in ("example.net", "evilexample.net", "example.net.evil.org"):
        with pytest.raises(Refused):
            allow.match(host, 443)


def test_ip_literals_match_only_when_listed_themselves() -> None:
    allow = AllowList(parse_host_entries(["203.0.113.7", "*.example.net"]))
    assert allow.match("203.0.113.7", 443).literal
    with pytest.raises(Refused, match="not on the allow-list"):
        allow.match("203.0.113.8", 443)
    # Spellings the system resolver would read as an address never count as a listed literal.
    for spelled in ("3405803783", "0xcb.0.113.7"):
        with pytest.raises(Refused):
            allow.match(spelled, 443)


def test_client_hosts_that_are_not_names_are_refused_and_logged_safely() -> None:
    hostile = "evil\x1b[31m\r\nInjected: yes" + "x" * 200
    with pytest.raises(Refused) as refused:
        canonical_host(hostile)
    assert "\x1b" not in refused.value.reason and "\n" not in refused.value.reason
    assert len(log_safe(hostile)) <= 80 and "\r" not in log_safe(hostile)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "link-local"),  # only ever an input here: nothing connects to it
        ("169.254.1.2", "link-local"),
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared address space"),
        ("100.127.255.254", "shared address space"),
        ("198.51.100.7", "private"),  # documentation ranges are not global
        ("224.0.0.1", "not a unicast address"),
        ("0.0.0.0", "not a unicast address"),
        ("255.255.255.255", "not a unicast address"),
        ("240.0.0.1", "private"),
        ("::1", "IPv6"),
        ("2001:db8::1", "IPv6"),
        ("::ffff:10.0.0.1", "IPv6"),
        ("fe80::1", "link-local"),
        ("not-an-address", "not an IP address"),
    ],
)
def test_address_check_refuses_everything_but_public_unicast_ipv4(address: str, reason: str) -> None:
    refusal = address_refusal(address)
    assert refusal is not None and reason in refusal


def test_address_check_lets_public_ipv4_through() -> None:
    assert address_refusal("11.22.33.44") is None  # a public unicast address (only a value here)


def test_internal_entries_allow_private_and_loopback_but_never_link_local() -> None:
    assert address_refusal("127.0.0.1", internal=True) is None
    assert address_refusal("10.1.2.3", internal=True) is None
    assert address_refusal("::1", internal=True) is None
    refusal = address_refusal("169.254.169.254", internal=True)
    assert refusal is not None and "link-local" in refusal
    assert address_refusal("224.0.0.1", internal=True) is not None
