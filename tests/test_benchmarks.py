"""The benchmark scripts still run: the fast decode agrees with the naive one, and the fresh-process probe works."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_run_all_only_reruns_one_part_and_keeps_the_others_text(monkeypatch):
    import run_all

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    previous = readme.split(run_all.START, 1)[1].split(run_all.END, 1)[0]
    monkeypatch.setattr(run_all.bench_startup, "main", lambda: "| command | seconds |\n|---|---|\n| x | 9.999 |")
    text = run_all.report({"startup"}, previous)
    old = {c.split("\n", 1)[0]: c for c in previous.split("\n### ")[1:]}
    new = {c.split("\n", 1)[0]: c for c in text.split("\n### ")[1:]}
    assert list(new) == list(old) and len(new) == 6
    assert all(new[t].strip() == old[t].strip() for t in new if t != "start-up")
    assert "| x | 9.999 |" in new["start-up"] and "| x | 9.999 |" not in old["start-up"]
    assert text.startswith(previous.strip().splitlines()[0]) and "Re-run since (start-up) on:" in text


def test_bench_int8_write_only_replaces_one_table(tmp_path, monkeypatch):
    import bench_int8

    monkeypatch.setattr(bench_int8, "ROOT", tmp_path)
    old = "Trained samples: a\n\n| t |\n|---|\n| 1 |\n\nBundled samples (random weights): b\n\n| r |\n|---|\n| 2 |"
    (tmp_path / "README.md").write_text(f"top\n{bench_int8.START}\n{old}\n{bench_int8.END}\ntail\n")
    bench_int8.write("Trained samples: new\n\n| t |\n|---|\n| 3 |", "trained")
    text = (tmp_path / "README.md").read_text()
    assert "| 3 |" in text and "| 1 |" not in text and "Bundled samples (random weights): b\n\n| r |" in text
    assert text.startswith("top\n") and text.endswith(f"{bench_int8.END}\ntail\n")


def test_bench_int8_errors_skip_overflowed_fp32_rows_and_flag_nan():
    import bench_int8

    ref = np.array([[[10, 10, 5, 5, 0.5, 0.8], [np.inf, 0, 1, 1, 1, 1]]], np.float32)
    int8 = np.array([[[11, 10, 5, 5, 0.5, 0.6], [0, 0, 1, 1, 1, 1]]], np.float32)
    assert bench_int8._errors([int8], [ref]) == pytest.approx((1.0, 0.1))  # the inf row left out
    int8[0, 0, 2] = np.nan
    assert bench_int8._errors([int8], [ref])[0] == np.inf
    assert bench_int8._cell({"flat": (np.inf, 0.25)}, "flat") == "overflow / 0.25"
    assert bench_int8._cell({}, "split") == "—"
