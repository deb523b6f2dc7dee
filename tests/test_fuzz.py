"""A bounded mutation-fuzz run: every mutated fixture gives a verified graph or a clear error.

The long run is ``python scripts/fuzz.py --minutes 10``.
"""

from __future__ import annotations

from collections import Counter

from fuzzing import base_models, run_case


def test_bounded_fuzz(tmp_path):
    bases = base_models()
    names = sorted(bases)
    outcomes = [run_case(names[s % len(names)], bases[names[s % len(names)]], s, tmp_path) for s in range(400)]
    findings = [f"{o.case}\n{o.detail}" for o in outcomes if o.kind == "finding"]
    assert not findings, "\n\n".join(findings[:3])
    kinds = Counter(o.kind for o in outcomes)
    assert kinds["verified"] >= 20 and kinds["refused"] >= 100  # both outcomes are exercised
    decode = [o for o in outcomes if "decode " in o.case or "decode constant" in o.case]
    assert len(decode) >= 50 and sum(o.kind == "refused" for o in decode) >= 25  # the decode is mutated too
    assert list(tmp_path.iterdir()) == []
