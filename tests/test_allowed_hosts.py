"""The default build allow-list, derived from pip, apt and hub settings (sample text; example names only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.sandbox.allowed_hosts import (
    hosts_from_deb822,
    hosts_from_hub_endpoint,
    hosts_from_pip_settings,
    hosts_from_sources_list,
    machine_allowed_hosts,
    merge_entries,
    pip_settings_from_conf,
    pip_settings_from_config_list,
    pip_settings_from_env,
    url_entry,
)
from evaluation.sandbox.egress_policy import parse_host_entries

DEFAULT_INDEX = ("index.example.org", "files.example.org")


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("https://pkgs.example.org/simple/", "pkgs.example.org"),
        ("http://Mirror.Example.org:80/debian", "mirror.example.org"),
        ("https://pkgs.example.org:443/", "pkgs.example.org"),
        ("https://user:secret@pkgs.example.org:8443/simple", "pkgs.example.org:8443"),
        ("http://203.0.113.9:3141/root/pypi/", "203.0.113.9:3141"),
        ("file:///srv/wheels", None),
        ("/opt/wheels", None),
        ("cdrom:[Debian]/", None),
        ("https://[2001:db8::1]/simple", None),
        ("https://pkgs.example.org:notaport/", None),
        ("https:///no-host", None),
    ],
)
def test_urls_become_entries_with_their_port_only_when_it_is_not_the_default(
    url: str, entry: str | None
) -> None:
    assert url_entry(url) == entry


def test_pip_config_list_output_is_read_from_every_scope() -> None:
    text = (
        "global.index-url='https://pkgs.example.org/simple'\n"
        "global.extra-index-url='https://extra.example.org/simple\\nfile:///srv/local'\n"
        ":env:.find-links='/opt/wheels https://wheels.example.net/links/'\n"
        "install.trusted-host='insecure.example.org:8080'\n"
        "global.cert='/etc/ssl/certs/ca-certificates.crt'\n"
        "not a setting line\n"
    )
    settings = pip_settings_from_config_list(text)
    assert ("index-url", "https://pkgs.example.org/simple") in settings
    hosts = hosts_from_pip_settings(settings, DEFAULT_INDEX)
    assert hosts == [
        "pkgs.example.org",
        "extra.example.org",
        "wheels.example.net",
        "insecure.example.org:8080",
    ]  # pip's default index is not used: an index-url is configured


def test_pip_environment_and_conf_files_count_and_the_default_index_joins_without_an_own_index() -> None:
    env = {"PIP_EXTRA_INDEX_URL": "https://extra.example.org/simple", "PIP_CERT": "/x", "HOME": "/root"}
    conf = (
        "[global]\nfind-links = file:///opt/wheels\n    https://links.example.org/\n"
        "[install]\ntrusted-host = pkgs.example.net\n"
    )
    settings = pip_settings_from_env(env) + pip_settings_from_conf(conf)
    assert hosts_from_pip_settings(settings, DEFAULT_INDEX) == [
        "extra.example.org",
        "links.example.org",
        "pkgs.example.net",
        *DEFAULT_INDEX,
    ]
    assert pip_settings_from_conf("not [ an ini file") == []


def test_no_index_turns_the_default_index_off() -> None:
    assert hosts_from_pip_settings(pip_settings_from_env({"PIP_NO_INDEX": "1"}), DEFAULT_INDEX) == []
    assert hosts_from_pip_settings([("no-index", "false")], DEFAULT_INDEX) == list(DEFAULT_INDEX)


def test_one_line_apt_sources_with_options_comments_and_other_schemes() -> None:
    text = (
        "# a comment line\n"
        "deb http://deb.example.org/debian bookworm main\n"
        "deb-src [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] https://src.example.org/debian bookworm\n"
        "deb [ trusted=yes ] http://lan.example.org:3142/debian bookworm main  # trailing comment\n"
        "#deb http://disabled.example.org/debian bookworm main\n"
        "deb cdrom:[Debian GNU/Linux]/ bookworm main\n"
        "deb file:/srv/repo ./\n"
    )
    assert hosts_from_sources_list(text) == [
        "deb.example.org",
        "src.example.org",
        "lan.example.org:3142",
    ]


def test_deb822_sources_with_several_uris_continuations_and_disabled_stanzas() -> None:
    text = (
        "Types: deb\n"
        "URIs: http://deb.example.org/debian https://mirror.example.net/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "\n"
        "# a disabled one\n"
        "Types: deb\n"
        "URIs: http://disabled.example.org/debian\n"
        "Enabled: no\n"
        "\n"
        "Types: deb\n"
        "URIs:\n"
        " http://security.example.org/debian-security\n"
        "Suites: bookworm-security\n"
    )
    assert hosts_from_deb822(text) == ["deb.example.org", "mirror.example.net", "security.example.org"]


def test_hub_endpoint_gives_its_host() -> None:
    assert hosts_from_hub_endpoint("https://hub.example.org") == ["hub.example.org"]
    assert hosts_from_hub_endpoint("http://127.0.0.1:5555") == ["127.0.0.1:5555"]
    assert hosts_from_hub_endpoint(None) == []


def test_merged_entries_are_unique_sorted_and_all_valid() -> None:
    merged = merge_entries(["b.example.org", "a.example.org"], ["b.example.org"], [])
    assert merged == ("a.example.org", "b.example.org")
    parse_host_entries(merged)


def test_this_machines_allow_list_is_read_from_files_it_points_at(tmp_path: Path) -> None:
    """``machine_allowed_hosts`` end to end, with pip's config and apt's folder under tmp_path."""
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text("deb http://deb.example.org/debian bookworm main\n")
    (apt / "sources.list.d" / "extra.sources").write_text("Types: deb\nURIs: https://deb822.example.org/x\n")
    (apt / "sources.list.d" / "old.list.disabled").write_text("deb http://ignored.example.org/ x main\n")
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text("[global]\nindex-url = https://pkgs.example.org/simple\n")
    env = {"PIP_CONFIG_FILE": str(pip_conf), "HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    hosts = machine_allowed_hosts("https://hub.example.org", env=env, apt_dir=str(apt))
    assert {"deb.example.org", "deb822.example.org", "pkgs.example.org", "hub.example.org"} <= set(hosts)
    assert "ignored.example.org" not in hosts
    parse_host_entries(hosts)
