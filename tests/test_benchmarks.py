"""The harness benchmark runs end to end in its quickest mode and reports every section.

Speed targets are the benchmark's business, not this test's: it checks the report's shape and that its
figures are sane (positive, finite, and never below what the stand-ins' fixed latencies allow).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_harness_quick_mode_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "harness.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", "--quick", "--no-docker", "--out", str(out)],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert {"machine", "scale", "overhead", "floor", "cold_warm", "memory", "targets", "table"} <= set(report)
    assert report["quick"] is True
    assert report["machine"]["nproc"] >= 1

    for seconds in ("10s", "30s"):
        o = report["overhead"][seconds]
        for key in ("samples_per_s", "cpu_ms_per_sample", "wall_s", "perturb_cpu_ms_per_item"):
            assert math.isfinite(o[key]) and o[key] > 0, (seconds, key, o[key])
    # Every request reached the stand-ins (two warm-ups of 8 items, then N of each length).
    n = report["overhead"]["n"]
    assert report["overhead"]["miner_stats"]["served"] == 2 * (8 + n)

    floor = report["floor"]
    for run in ("concurrent", "concurrency_1", "loop"):
        # The stand-ins sleep their latencies: no run can beat its floor (a little slack for clocks).
        assert floor[run]["wall_s"] >= 0.99 * floor[run]["floor_s"] > 0, run
    assert floor["miner_stats"]["max_in_work"] <= floor["miner_parallel"]
    assert floor["judge_stats"]["max_in_work"] <= floor["judge_batch"]
    assert floor["speedup_vs_loop"] > 0 and floor["ratio_to_floor"] > 0

    assert report["cold_warm"] == {"skipped": "--no-docker"}

    memory = report["memory"]
    assert [p["n"] for p in memory["points"]] == list(report["scale"]["memory_ns"])
    for point in memory["points"]:
        assert point["peak_rss_mb"] >= point["rss_before_mb"] > 0
    assert math.isfinite(memory["slope_mb_per_1000"])

    names = {t["section"] for t in report["targets"]}
    assert names == {"1 overhead", "2 floor", "5 memory"}
    assert all(t["verdict"] in ("PASS", "MISS") for t in report["targets"])
    assert "| section | measurement |" in done.stdout
