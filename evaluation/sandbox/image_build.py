"""The image build request: ``POST /build`` with the validator's own tar stream as its body.

``APIClient.build(path=...)`` would read the repo's ``.dockerignore`` and tar the folder in our process
(see :mod:`evaluation.sandbox.build_context` for why that is unsafe); its ``fileobj`` form wants a file
object and so a whole tar in memory or on disk. This module sends a generator of chunks instead (HTTP
chunked transfer) with the query parameters encoded as the SDK encodes them.

It uses the SDK's private ``_post``, ``_url``, ``_set_auth_headers`` and ``_stream_helper``: they carry
the client's base URL, API version, timeouts, registry auth header (the daemon needs it for a ``FROM``
it must pull; it never reaches a build step) and the decoding of the daemon's JSON stream, which no
public call offers for a streamed body. Only the Docker adapter imports this module, and the SDK
version is pinned in pyproject.toml, so a change there breaks one place that tests cover.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Generator, Iterable, Mapping
from typing import Any

import docker

from evaluation.sandbox.build_context import DOCKERFILE


def _flag(value: bool) -> str:
    # The daemon reads "", "0", "no", "false" and "none" as false, anything else as true.
    return "1" if value else "0"


def build_params(
    *,
    tag: str,
    labels: Mapping[str, str],
    build_args: Mapping[str, str],
    network_mode: str,
    memory: int,
    cpu_shares: int,
    shm_size: int,
    cache_from: str | None,
) -> dict[str, str]:
    """The query of one miner build (legacy builder).

    Intermediate containers are always removed (``rm`` and ``forcerm``), the base is never pulled
    again, and swap is forbidden (``memswap`` equal to ``memory``). ``cache_from`` names the miner's own
    previous image: the builder then only reuses layers that are that image or its ancestors. Without
    one the build uses no cache at all, so one miner's layers never serve another's build. Callers add
    their own keys (``cgroupparent``, a per-build ``networkmode``) to the returned dict.
    """
    params = {
        "t": tag,
        "dockerfile": DOCKERFILE,
        "labels": json.dumps(dict(labels)),
        "buildargs": json.dumps(dict(build_args)),
        "networkmode": network_mode,
        "memory": str(memory),
        "memswap": str(memory),
        "cpushares": str(cpu_shares),
        "shmsize": str(shm_size),
        "rm": _flag(True),
        "forcerm": _flag(True),
        "pull": _flag(False),
        "q": _flag(False),
        "nocache": _flag(cache_from is None),
    }
    if cache_from is not None:
        params["cachefrom"] = json.dumps([cache_from])
    return params


class BuildRequest:
    """One ``POST /build``: the body is streamed, the daemon's JSON messages are read back.

    :meth:`events` runs in a worker thread; :meth:`cancel` may be called from any thread and drops the
    connection at once (a thread blocked reading a silent build wakes up), which makes the daemon
    cancel the build and remove its step container.
    """

    def __init__(
        self, api: docker.APIClient, params: Mapping[str, str], body: Iterable[bytes], *, timeout_s: float
    ) -> None:
        """``timeout_s`` bounds each socket read and write: a silent build ends after it."""
        self._api = api
        self._params = dict(params)
        self._body = body
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._response: Any = None
        self._cancelled = False

    def events(self) -> Generator[dict[str, Any], None, None]:
        """The daemon's messages (``stream``, ``error``, ``aux`` ...) as dicts, until the build ends.

        Raises ``docker.errors.APIError`` for a refused request and whatever the body raises while it
        is sent (a deadline, a context over its cap).
        """
        headers = {"Content-Type": "application/tar"}
        self._api._set_auth_headers(headers)
        response = self._api._post(
            self._api._url("/build"),
            data=self._body,
            params=self._params,
            headers=headers,
            stream=True,
            timeout=self._timeout_s,
        )
        with self._lock:
            self._response = response
            cancelled = self._cancelled
        try:
            if cancelled:
                return
            yield from self._api._stream_helper(response, decode=True)
        finally:
            response.close()

    def cancel(self) -> None:
        """Drop the connection (idempotent, any thread); a request not yet answered stops when it is."""
        with self._lock:
            self._cancelled = True
            response = self._response
        if response is None:
            return
        with contextlib.suppress(Exception):
            # The SDK's own way to the socket under a streamed response (unix socket or TCP).
            raw = self._api._get_raw_response_socket(response)
            getattr(raw, "_sock", raw).shutdown(socket.SHUT_RDWR)
