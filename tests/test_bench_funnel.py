"""``python -m bench funnel``: the detector run on a phantom time point, each nodule placed at the
stage that loses it (real detector, real phantom; development seed 1 at 256²)."""

from __future__ import annotations

import pytest

from bench.funnel import STAGES, funnel_scan, main

# every verdict inference.detection.judge_candidate and detect_nodules(record=...) can give
VERDICTS = ({"nodule", "no segmentation", "ground-glass reading overruled", "wall", "duplicate"}
            | {f"shape: {r}" for r in ("too small", "too large", "elongated", "not compact")}
            | {f"vessel: {r}" for r in ("vessel segment", "branching", "tube", "not a ball", "confluence",
                                        "junction", "small junction")})


@pytest.fixture(scope="module")
def seed1_current():
    from inference.phantoms import generate_patient

    patient = generate_patient(1, timepoints=2, rows=256)
    return patient.timepoints[1], patient.truth()["nodules"]


def test_both_nodules_of_seed_1_are_detected_without_false_positives(seed1_current) -> None:
    tp, nodules = seed1_current
    rows, others, false_pos = funnel_scan(tp, nodules, 1)
    assert {r["nodule"]: r["stage"] for r in rows} == {"N1": "detected", "N2": "detected"}
    assert false_pos == 0
    # the candidates that are not nodules were turned down, each with a verdict of a named rule
    assert others
    assert set(others) <= VERDICTS, set(others) - VERDICTS


def test_a_budget_of_one_leaves_the_lower_ranked_nodule_beyond_it(seed1_current) -> None:
    tp, nodules = seed1_current
    rows, _, _ = funnel_scan(tp, nodules, 1, budget=1)
    stages = sorted(r["stage"] for r in rows)
    assert all(s in STAGES for s in stages)
    assert "beyond budget" in stages
    beyond = [r for r in rows if r["stage"] == "beyond budget"]
    assert beyond and all(r["detail"].startswith("rank") and r["detail"] != "rank 0" for r in beyond)


def test_held_out_seeds_are_refused() -> None:
    assert main(["--seed0", "1000", "--pairs", "1"]) == 2
