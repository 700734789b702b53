"""What a hostile Dockerfile's RUN step tries while the image builds; prints one BUILD-REPORT line.

    python3 build_probe.py probe '<json>'   connect out directly and through the build's proxy
    python3 build_probe.py fork N           fork up to N sleeping children
    python3 build_probe.py fill MIB         write MIB MiB into the image layer

Every mode fails the step on purpose (exit 3) after its report, so the validator records the build log.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.request
from typing import Any


def gateway() -> str:
    with open("/proc/net/route") as routes:
        for line in routes.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])
    return "none"


def tcp(host: str, port: int) -> str:
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as exc:
        return f"failed: {type(exc).__name__} {exc.errno}"


def probe(config: dict[str, Any]) -> dict[str, str]:
    report = {f"tcp {h}:{p}": tcp(h, p) for h, p in config.get("tcp", [])}
    report.update({f"gateway {gateway()}:{p}": tcp(gateway(), p) for p in config.get("gateway_tcp", [])})
    proxy = os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY") or ""
    report["proxy"] = proxy or "none"
    # Through the proxy even for loopback names: the point is what the proxy lets through.
    for name in ("no_proxy", "NO_PROXY"):
        os.environ.pop(name, None)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    for url in config.get("via_proxy", []):
        try:
            opener.open(url, timeout=5).read(100)
            report[f"proxy {url}"] = "fetched"
        except Exception as exc:
            report[f"proxy {url}"] = f"failed: {type(exc).__name__} {exc}"[:120]
    return report


def fork(limit: int) -> dict[str, str]:
    forked, failure = 0, "none"
    try:
        while forked < limit:
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            forked += 1
    except OSError as exc:
        failure = f"errno {exc.errno}"
    return {"forked": str(forked), "failure": failure}


def fill(mib: int) -> dict[str, str]:
    chunk = b"\0" * (1 << 20)
    written = 0
    with open("/fill.bin", "wb") as out:
        for _ in range(mib):
            out.write(chunk)
            out.flush()
            written += 1
    return {"written_mib": str(written)}


if __name__ == "__main__":
    mode, argument = sys.argv[1], sys.argv[2]
    if mode == "probe":
        result = probe(json.loads(argument))
    elif mode == "fork":
        result = fork(int(argument))
    else:
        result = fill(int(argument))
    print("BUILD-REPORT " + json.dumps(result), flush=True)
    sys.exit(3)
