"""Witnesses of the egress and host-guard tests: a counting TCP listener, and a documentation-range
address on an interface the test creates."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def documentation_address(prefix: str) -> Iterator[str]:
    """A 198.51.100.x address on a new interface named ``prefix`` + random hex, removed afterwards.

    Skips without root or iproute2. A bridge, not a dummy: the dummy module is not on every kernel
    (not on this one).
    """
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create a probe interface")
    name = f"{prefix}{secrets.token_hex(3)}"
    address = f"198.51.100.{secrets.randbelow(250) + 2}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", name], check=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield address
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


class Listener:
    """A TCP listener on one address that counts the connections it accepts (and closes them)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.accepted = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((address, 0))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.port = int(self._socket.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()
