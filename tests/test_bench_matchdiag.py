"""The matching-failure classification of ``python -m bench matchdiag`` (pure functions)."""

from __future__ import annotations

import math

import pytest

from bench.matchdiag import classify_match, vdt_outcome


def test_ok_when_one_tracked_nodule_holds_both_sides() -> None:
    assert classify_match({0}, {0}, {0: 1}, {0: 1}, True, True) == "ok"


def test_missed_both_and_one_side_missing() -> None:
    assert classify_match(set(), set(), {}, {}, False, False) == "missed_both"
    # current found (detector), prior neither detected nor propagated
    assert classify_match(set(), {0}, {}, {0: 1}, False, True) == "prior_missing:not_detected"
    # the prior was detected, but no tracked nodule holds it any more
    assert classify_match(set(), {0}, {}, {0: 1}, True, True) == "prior_missing:detected"
    assert classify_match({0}, set(), {0: 1}, {}, True, False) == "current_missing:not_detected"


def test_split_wrong_pair_and_extra_fragment() -> None:
    # tracked 0 = resolved (prior only), tracked 1 = new (current only)
    assert classify_match({0}, {1}, {0: 1}, {1: 1}, True, True) == "split"
    # tracked 0 pairs our prior with another nodule's current (label 2)
    assert classify_match({0}, {1}, {0: 1, 1: 3}, {0: 2, 1: 1}, True, True) == "wrong_pair"
    # the right pair (0) plus tracked 1 holding our current with another prior
    assert classify_match({0}, {0, 1}, {0: 1, 1: 2}, {0: 1, 1: 1}, True, True) == "extra_fragment"
    # tracked 1 holds our current with a false prior (label 0): not counted wrong by bench.measure
    assert classify_match({0}, {0, 1}, {0: 1, 1: 0}, {0: 1, 1: 1}, True, True) == "ok"


def test_vdt_outcome() -> None:
    true = 100 * math.log(2) / math.log(2.0)  # doubling in 100 days
    assert vdt_outcome(100.0, 200.0, 100, None, False) == ("no_pair", None)
    assert vdt_outcome(100.0, 200.0, 100, None, True) == ("no_vdt", None)
    kind, e = vdt_outcome(100.0, 200.0, 100, 1.1 * true, True)
    assert kind == "ok" and e == pytest.approx(0.1)
    kind, e = vdt_outcome(100.0, 200.0, 100, 0.8 * true, True)
    assert kind == "vol_err" and e == pytest.approx(-0.2)


def test_perturbed_registration_error_has_the_requested_size() -> None:
    import numpy as np

    from bench.matchdiag import perturbed
    from inference.registration import RigidTransform

    t = RigidTransform(np.eye(4))
    centre = np.array([10.0, -20.0, 30.0])
    shifted = perturbed(t, centre, 12.0, 0.0, seed=3)
    assert np.linalg.norm(shifted.to_prior(np.zeros(3))) == pytest.approx(12.0)
    rotated = perturbed(t, centre, 0.0, 6.0, seed=3)
    assert np.linalg.norm(rotated.to_prior(centre) - centre) == pytest.approx(0.0, abs=1e-9)
    assert rotated.rotation_deg == pytest.approx(6.0)
