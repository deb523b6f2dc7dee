"""Shared helpers: the machine description, fresh-process measurement, and the benchmark models."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"

#: generated decoded YOLOv6 (0.3-style, DFL) models standing in for the upstream sizes
SIZES = {"yolov6n-size": 48, "yolov6s-size": 96, "yolov6l-size": 176}


def machine() -> str:
    """One line describing where the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(ln for ln in meminfo if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version

    libs = ", ".join(f"{p} {version(p)}" for p in ("numpy", "onnx", "onnxruntime"))
    return (f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; {libs}")


def model(name: str) -> Path:
    """The generated decoded model ``name`` from :data:`SIZES` (640x640 input), built once and cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    p = CACHE / f"{name}.onnx"
    if not p.exists():
        sys.path.insert(0, str(ROOT))
        import onnx

        from onnx_headcut.synth import yolov6_af

        m = yolov6_af(width=SIZES[name], reg_max=16, size=(640, 640))
        onnx.save(m, str(p))
    return p


def fresh(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh Python; it must print one JSON line. Adds the child's peak RSS (MB).

    The peak is /proc's VmHWM: ru_maxrss would carry the parent's peak across fork and exec.
    """
    wrapper = (
        "import json, resource, sys, time\n" + code +
        "\nres = RESULT if 'RESULT' in dir() else {}\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "res['peak_rss_mb'] = int(hwm[0].split()[1]) / 1024 if hwm "
        "else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print('BENCH ' + json.dumps(res))\n"
    )
    p = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, **(env or {})})
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("BENCH ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return json.loads(lines[-1][6:])


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
