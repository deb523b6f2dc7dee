"""strip on a model over 2 GB (weights in a .onnx.data side file), against the load + save round trip.

    python benchmarks/bench_large.py

Generates (once, in benchmarks/.cache, ~2.1 GB) a decoded YOLOv6 DFL export too big for a single
protobuf, so it is stored with external data; strip must load it, cut it, infer shapes without
serialising it, and write raw.onnx + raw.onnx.data. One fresh process each; --no-verify (running two
2 GB models in onnxruntime is a separate cost).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, ROOT, fresh, machine, table  # noqa: E402

ROUND_TRIP = """
import onnx
t = time.perf_counter()
m = onnx.load(SRC)
onnx.save(m, DST, save_as_external_data=True, location=Path(DST).name + '.data')
RESULT = {'seconds': time.perf_counter() - t}
"""

STRIP = """
from onnx_headcut.strip import strip
t = time.perf_counter()
strip(SRC, DST, verify=False)
RESULT = {'seconds': time.perf_counter() - t}
"""


def big_model() -> Path:
    p = CACHE / "over-2GB.onnx"
    if not p.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\nimport onnx\n"
                f"from onnx_headcut.synth import yolov6_af\n"
                f"m = yolov6_af(width=520, reg_max=16, size=(320, 320))\n"
                f"onnx.save(m, {str(p)!r}, save_as_external_data=True, location='over-2GB.onnx.data')\n")
        fresh(code)
    return p


def main() -> str:
    src = big_model()
    size = sum(f.stat().st_size for f in CACHE.glob("over-2GB.onnx*")) / 1e9
    rows = []
    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        for label, code in (("onnx.load + onnx.save (baseline)", ROUND_TRIP), ("headcut strip --no-verify", STRIP)):
            dst = Path(d, "out.onnx")
            r = fresh(f"from pathlib import Path\nSRC, DST = {str(src)!r}, {str(dst)!r}\n" + code)
            written = sum(f.stat().st_size for f in Path(d).iterdir()) / 1e9
            rows.append([f"{size:.2f} GB", label, f"{r['seconds']:.1f}", f"{r['peak_rss_mb'] / 1024:.2f}",
                         f"{written:.2f} GB"])
            for f in Path(d).iterdir():
                f.unlink()
    return table(["model", "tool", "time (s)", "peak RSS (GiB)", "written"], rows)


if __name__ == "__main__":
    out = main()
    print(f"Machine: {machine()}\n")
    print(out)
