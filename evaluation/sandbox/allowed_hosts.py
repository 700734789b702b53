"""The hosts image builds may reach by default, read from this machine's own configuration at run time.

With ``build-allowed-hosts`` empty, builds may reach what the validator's machine itself installs from:
pip's index and find-links URLs and trusted hosts (``pip config list``, ``PIP_*`` variables, pip.conf
files; pip's own default index when none of them names an index), apt's sources (one-line ``.list``
files and deb822 ``.sources`` files) and the hub endpoint. No registry or mirror is named in this code:
every host comes from configuration read when the first build needs the proxy.

The parsers are pure (sample text in, allow-list entries out); ``machine_allowed_hosts`` reads the files.
"""

from __future__ import annotations

import ast
import configparser
import glob
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from evaluation.sandbox.egress_policy import parse_host_entry

PIP_URL_KEYS = ("index-url", "extra-index-url", "find-links")
PIP_HOST_KEYS = ("trusted-host",)
_PIP_ENV = {
    "PIP_INDEX_URL": "index-url",
    "PIP_EXTRA_INDEX_URL": "extra-index-url",
    "PIP_FIND_LINKS": "find-links",
    "PIP_TRUSTED_HOST": "trusted-host",
    "PIP_NO_INDEX": "no-index",
}
_MAX_CONFIG_BYTES = 1 << 20
_PIP_TIMEOUT_S = 30.0
_DEFAULT_PORT = {"http": 80, "https": 443}

PipSetting = tuple[str, str]  # (key without section, value)


def url_entry(url: str) -> str | None:
    """The allow-list entry for an http(s) URL (``host``, or ``host:port`` for another port), else None.

    Other schemes (``file:``, ``cdrom:``) and IPv6 hosts give None: there is nothing to allow.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORT or not host or ":" in host:
        return None
    entry = host if port in (None, _DEFAULT_PORT[scheme]) else f"{host}:{port}"
    return entry if _valid(entry) else None


def host_entry(text: str) -> str | None:
    """A bare ``host`` or ``host:port`` (pip's ``trusted-host``) as an entry, or None if it is not one."""
    entry = text.strip().lower()
    return entry if entry and _valid(entry) else None


def _valid(entry: str) -> bool:
    try:
        parse_host_entry(entry)
    except ValueError:
        return False
    return True


def pip_settings_from_config_list(text: str) -> list[PipSetting]:
    """The settings in ``pip config list`` output (``global.index-url='https://...'`` per line)."""
    settings = []
    for line in text.splitlines():
        name, eq, raw = line.partition("=")
        if not eq or "." not in name:
            continue
        key = name.rsplit(".", 1)[1].strip()
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip().strip("'\"")
        settings.append((key, str(value)))
    return settings


def pip_settings_from_env(env: Mapping[str, str]) -> list[PipSetting]:
    """The settings pip reads from ``PIP_INDEX_URL`` and its siblings."""
    return [(key, env[name]) for name, key in _PIP_ENV.items() if env.get(name)]


def pip_settings_from_conf(text: str) -> list[PipSetting]:
    """The settings of a pip.conf file, from every section (``[global]``, ``[install]``, ...)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return []
    return [(key, value) for section in parser.sections() for key, value in parser.items(section)]


def hosts_from_pip_settings(
    settings: Iterable[PipSetting], default_index_hosts: Iterable[str] = ()
) -> list[str]:
    """Entries for every URL and trusted host in ``settings``; ``default_index_hosts`` (pip's default
    index) too unless the settings name an index of their own or turn indexes off."""
    entries: list[str] = []
    own_index = False
    for key, value in settings:
        key = key.strip().lower().replace("_", "-")
        if key == "index-url" or (key == "no-index" and value.strip().lower() in ("1", "true", "yes", "on")):
            own_index = True
        for token in value.split():
            if key in PIP_URL_KEYS:
                entry = url_entry(token)
            elif key in PIP_HOST_KEYS:
                entry = host_entry(token)
            else:
                entry = None
            if entry:
                entries.append(entry)
    if not own_index:
        entries.extend(entry for host in default_index_hosts if (entry := host_entry(host)))
    return entries


def hosts_from_sources_list(text: str) -> list[str]:
    """Entries for the URIs of one-line apt sources (``deb [options] URI suite components``)."""
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] not in ("deb", "deb-src"):
            continue
        rest = words[1:]
        if rest and rest[0].startswith("["):
            # Options may contain spaces: skip to the word that closes them.
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if rest and (entry := url_entry(rest[0])):
            entries.append(entry)
    return entries


def hosts_from_deb822(text: str) -> list[str]:
    """Entries for the ``URIs:`` of deb822 apt sources (``.sources`` files); disabled stanzas skipped."""
    entries: list[str] = []
    for stanza in _deb822_stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        entries.extend(entry for uri in stanza.get("uris", "").split() if (entry := url_entry(uri)))
    return entries


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    """Fields of each stanza, keys lower-cased, continuation lines joined."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif line[0] in " \t" and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def hosts_from_hub_endpoint(endpoint: str | None) -> list[str]:
    """The entry for the hub endpoint's host (none when no endpoint is known)."""
    entry = url_entry(endpoint) if endpoint else None
    return [entry] if entry else []


def merge_entries(*groups: Iterable[str]) -> tuple[str, ...]:
    """Every entry once, sorted."""
    return tuple(sorted({entry for group in groups for entry in group}))


# ------------------------------------------------------------------------------ reading this machine


def _read(path: str | Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(_MAX_CONFIG_BYTES)
    except OSError:
        return ""


def _pip_config_files(env: Mapping[str, str]) -> list[str]:
    """The pip.conf files pip reads on this machine (global, user, site, ``PIP_CONFIG_FILE``)."""
    xdg_dirs = env.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    home = env.get("HOME") or str(Path.home())
    xdg_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    paths = [os.path.join(d, "pip", "pip.conf") for d in xdg_dirs.split(":") if d]
    paths += [
        "/etc/pip.conf",
        os.path.join(home, ".pip", "pip.conf"),
        os.path.join(xdg_home, "pip", "pip.conf"),
    ]
    paths.append(os.path.join(sys.prefix, "pip.conf"))
    if env.get("PIP_CONFIG_FILE"):
        paths.append(env["PIP_CONFIG_FILE"])
    return paths


def _pip_config_list(python: str) -> str:
    """``pip config list`` output of ``python``'s pip, or nothing when it cannot run."""
    try:
        done = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=_PIP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def pip_default_index_hosts() -> list[str]:
    """The hosts of pip's built-in default index (its pages and its files), read from pip itself."""
    try:
        from pip._internal.models.index import PyPI
    except Exception:
        return []
    return [host for host in (getattr(PyPI, "netloc", ""), getattr(PyPI, "file_storage_domain", "")) if host]


def machine_allowed_hosts(
    hub_endpoint: str | None,
    *,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    apt_dir: str = "/etc/apt",
) -> tuple[str, ...]:
    """The default allow-list of this machine (blocking: runs pip and reads config files)."""
    env = os.environ if env is None else env
    pip_settings = pip_settings_from_config_list(_pip_config_list(python))
    pip_settings += pip_settings_from_env(env)
    for path in _pip_config_files(env):
        pip_settings += pip_settings_from_conf(_read(path))
    pip_hosts = hosts_from_pip_settings(pip_settings, pip_default_index_hosts())
    apt_hosts = hosts_from_sources_list(_read(os.path.join(apt_dir, "sources.list")))
    for path in sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.list"))):
        apt_hosts += hosts_from_sources_list(_read(path))
    for path in sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.sources"))):
        apt_hosts += hosts_from_deb822(_read(path))
    return merge_entries(pip_hosts, apt_hosts, hosts_from_hub_endpoint(hub_endpoint))
