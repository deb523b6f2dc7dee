"""Start-up time of ``headcut --help`` on a fresh install (median of 10 fresh processes).

    python benchmarks/bench_startup.py

A virtualenv in benchmarks/.cache/startup-venv gets the project's runtime dependencies once (from the
package index); on every run headcut itself is reinstalled there from this checkout (``pip install
--no-deps --force-reinstall .``, not editable), so what is timed is the ``headcut`` console script of a
fresh install. The first run after that install is reported apart (its bytecode is compiled at
install time, as pip does by default) next to the median of the next ten.

Each row is a fresh process timed from the outside (start to exit); "python -c pass" is the
interpreter's own start-up in the same virtualenv.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, ROOT, machine, table  # noqa: E402

VENV = CACHE / "startup-venv"


def fresh_install() -> Path:
    """The ``bin`` folder of a virtualenv with a fresh (non-editable) install of this checkout."""
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(ROOT)],
                   check=True, cwd=CACHE)
    return py.parent


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, cwd=CACHE)
    return time.perf_counter() - t


def main() -> str:
    CACHE.mkdir(parents=True, exist_ok=True)
    bin_ = fresh_install()
    first = timed([str(bin_ / "headcut"), "--help"])
    rows = []
    for label, cmd in (("python -c pass (interpreter alone)", [str(bin_ / "python"), "-c", "pass"]),
                       ("headcut --help (console script)", [str(bin_ / "headcut"), "--help"]),
                       ("headcut --version", [str(bin_ / "headcut"), "--version"])):
        rows.append([label, "median of 10", f"{statistics.median(timed(cmd) for _ in range(10)):.3f}"])
    rows.append(["headcut --help", "first run after the install", f"{first:.3f}"])
    return table(["command (fresh non-editable install)", "runs", "seconds"], rows)


if __name__ == "__main__":
    out = main()
    print(f"Machine: {machine()}\n")
    print(out)
