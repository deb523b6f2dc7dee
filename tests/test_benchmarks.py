"""The benchmark scripts still run: the fast decode agrees with the naive one, and the fresh-process probe works."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_decode  # noqa: E402
from _common import fresh  # noqa: E402


def test_candidates_first_equals_naive():
    for label, g in bench_decode.CASES.items():
        raw = bench_decode.raw_like(g, seed=3)
        fast, slow = bench_decode.detect(raw, g), bench_decode.naive(raw, g)
        assert len(fast) == len(slow) >= 15, label
        np.testing.assert_allclose(fast, slow, atol=1e-3)


def test_fresh_process_probe_reports_time_and_peak_rss():
    r = fresh("t = time.perf_counter()\nx = bytearray(50 * 2**20)\nRESULT = {'seconds': time.perf_counter() - t}")
    assert r["seconds"] >= 0 and r["peak_rss_mb"] >= 50
