"""Mutation-fuzz headcut strip for a while and report every finding.

    python scripts/fuzz.py --minutes 10            # writes nothing but a summary on stdout

Each case mutates a fixture graph (drop a node, change a constant, alter a shape, reorder inputs,
change a grid/stride/anchor constant or an op type inside the decode) and runs strip; only a
verified graph whose raw outputs are the conv values, or a clear HeadcutError, is acceptable (see
tests/fuzzing.py). Exit status 1 when anything else happened.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzzing import base_models, run_case  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0, help="first case seed")
    args = ap.parse_args()
    bases = base_models()
    names = sorted(bases)
    counts, findings = Counter(), []
    start, seed = time.monotonic(), args.seed
    with tempfile.TemporaryDirectory(prefix="headcut-fuzz-") as d:
        while time.monotonic() - start < args.minutes * 60:
            base = names[seed % len(names)]
            out = run_case(base, bases[base], seed, Path(d))
            counts[out.kind] += 1
            if out.kind == "finding":
                findings.append(out)
                print(f"FINDING {out.case}\n{out.detail}\n", flush=True)
            seed += 1
    elapsed = time.monotonic() - start
    print(f"{sum(counts.values())} cases in {elapsed / 60:.1f} min: {counts['verified']} verified, "
          f"{counts['refused']} refused with a clear error, {counts['finding']} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
