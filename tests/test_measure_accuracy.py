"""Accuracy of the imaging core on held-out phantom pairs (issue 03 "Must show").

Seeds ≥ 1000 were never looked at during development (which used seeds 0–99): only their summary
scores are printed here. The pairs are generated in memory at a reduced matrix (``rows=256``:
~1.1–1.8 mm pixels, the phantom's own clinical slice thicknesses 0.625–2.5 mm) so the test runs in
about two minutes on two shared cores. Why not 512²: the detector verifies candidates on a ~1.2 mm
grid whatever the input (``detection._verification_grid``), so detection behaves alike at both
matrices, while generating and analysing four 512² pairs costs ~4× the time. Volume measurement at
512² is finer: on the twelve held-out pairs of ``python -m bench measure`` (which scores the same way
at the native matrix by default) the volume error was median 4.6 % / p95 23.6 % at 512² against
6.3 % / 43.8 % at 256² (2026-12-06), so this test is the harder case for volumes.

The issue's targets are printed next to the measured values. The assertions are *regression
floors* just below what the method measured — not the issue's targets, most of which are not met
(see the numbers below). A floor that is crossed means the measurement got worse.
"""

from __future__ import annotations

import pytest

from bench.measure import TARGETS, evaluate, print_accuracy

SEEDS = [1000, 1001, 1002, 1003]

# Regression floors just below what the method measured at rows=256 on the held-out seeds above.
# 2026-11-22 (after position-first matching, Hessian-ranked candidates, vessel rules, ground-glass
# rim, two-scale propagation): sensitivity 77.8 % (7/9), 2.00 FP/scan (16/8), volume error median
# 8.2 % and p95 34.6 % (n=12), matching 66.7 % (6/9), VDT within 15 % 3/5, consistency 75.0 % (9/12).
# Before (session 1): sensitivity 33 %, 0.63 FP/scan, median volume error 9.3 %, matching 33 %,
# VDT 3/5, consistency 78 %. Issue targets met: none on this held-out set (see bench/measure.py).
# 2026-11-22 later (vessel-junction rule: a non-spherical piece cut from a dense region > 8× its
# volume is rejected at the lung boundary too; diagnosed on fresh dev seeds 100–115): 1.38 FP/scan
# (11/8), every other metric unchanged.
FLOORS = {
    "sensitivity": 0.70,
    "fp_per_scan": 1.5,
    "volume_err_median": 0.10,
    "volume_err_p95": 0.45,
    "matching": 0.60,
    "consistency": 0.70,
}


@pytest.mark.slow
def test_held_out_phantom_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    scores = evaluate(SEEDS, rows=256)
    with capsys.disabled():
        print_accuracy(scores, f"held-out phantom pairs {SEEDS} at rows=256 (targets: issue 03)")
    m = scores.metrics()
    assert scores.truth_ge5 >= 4, "the held-out set must contain nodules ≥ 5 mm"
    assert m["sensitivity"] >= FLOORS["sensitivity"], m
    assert m["fp_per_scan"] <= FLOORS["fp_per_scan"], m
    assert m["volume_err_median"] <= FLOORS["volume_err_median"], m
    assert m["volume_err_p95"] <= FLOORS["volume_err_p95"], m
    assert m["matching"] >= FLOORS["matching"], m
    assert m["consistency"] >= FLOORS["consistency"], m
    assert set(TARGETS) >= set(FLOORS) - {"fp_per_scan"}
