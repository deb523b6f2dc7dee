"""Start-up time of ``headcut --help`` (median of 10 fresh processes).

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402


def main() -> str:
    rows = []
    for label, cmd in (("python -c pass (interpreter alone)", [sys.executable, "-c", "pass"]),
                       ("headcut --help", [sys.executable, "-m", "onnx_headcut", "--help"])):
        times = []
        for _ in range(10):
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        rows.append([label, f"{statistics.median(times):.3f}"])
    return table(["command", "median seconds"], rows)


if __name__ == "__main__":
    out = main()
    print(f"Machine: {machine()}\n")
    print(out)
