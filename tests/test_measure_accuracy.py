"""Accuracy of the imaging core on held-out phantom pairs (issue 03 "Must show").

Seeds ≥ 1000 were never looked at during development (which used seeds 0–99). The pairs are
generated in memory at a reduced matrix (``rows=256``: ~1.5–1.8 mm pixels) so the test runs in a few
minutes on two cores; ``python -m bench measure`` runs the same scoring at 512².

The issue's targets are printed next to the measured values. The assertions are *regression
floors* at what the current method reaches at this resolution — not the issue's targets, which
are not all met yet (see the report and ``bench/measure.py`` output). A floor that is crossed means
the measurement got worse.
"""

from __future__ import annotations

import pytest

from bench.measure import TARGETS, evaluate, print_accuracy

SEEDS = [1000, 1001, 1002, 1003]

# Regression floors below what the method measured at rows=256 on the held-out seeds above
# (2026-11-22: sensitivity 33 %, 0.63 FP/scan, median volume error 9.3 %, matching 33 %,
# consistency 78 %). Far from the targets, which remain open work (issue 03).
FLOORS = {
    "sensitivity": 0.25,
    "fp_per_scan": 1.5,
    "volume_err_median": 0.12,
    "matching": 0.25,
    "consistency": 0.60,
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
    assert m["matching"] >= FLOORS["matching"], m
    assert m["consistency"] >= FLOORS["consistency"], m
    assert set(TARGETS) >= set(FLOORS) - {"fp_per_scan"}
