"""The detector's vessel rules (:func:`inference.shape.is_vessel_like`) on measured features.

The feature values are those the verification measured on development phantoms (seeds in the
names): vessel pieces that passed every shape rule, and true nodules they must not catch.
"""

from __future__ import annotations

import pytest

from inference.shape import is_lens_at_wall, is_nodule, is_vessel_like, not_nodular, vessel_evidence


def _feat(d_eq: float, elongation: float, leak: float, blobness: float, solidity: float = 1.0,
          lung_fraction: float = 1.0, prolateness: float | None = None) -> dict[str, float]:
    return {"d_eq_mm": d_eq, "elongation": elongation, "leak": leak, "blobness": blobness,
            "solidity": solidity, "lung_fraction": lung_fraction, "fill": 0.05, "contrast_hu": 300.0,
            "prolateness": elongation if prolateness is None else prolateness}


@pytest.mark.parametrize("feat", [
    # demo patient (seed 2026), reported as a 101 mm³ "ground-glass nodule" in a vessel fork
    _feat(5.78, 1.97, 9.2, 0.615, solidity=0.60),
    _feat(6.71, 2.27, 30.2, 0.70),  # dev seed 18, prior
    _feat(7.49, 2.01, 11.5, 0.60, solidity=0.84),  # dev seed 12, prior
], ids=["demo-fork", "seed18", "seed12"])
def test_elongated_piece_of_a_much_larger_dense_tree_is_a_vessel(feat: dict[str, float]) -> None:
    # each passes the basic shape test and is ball-like enough at its scale for the other rules
    assert is_nodule(feat)
    assert is_vessel_like(feat)


@pytest.mark.parametrize("feat", [
    _feat(9.7, 1.15, 12.7, 0.65),  # perivascular nodule, dev seed 7: compact although its region is a tree
    _feat(15.3, 1.08, 8.9, 0.68),  # perivascular nodule, dev seed 11
    _feat(5.0, 2.03, 4.9, 0.74),  # small elongated nodule, dev seed 1: little of its region cut away
], ids=["perivascular-7", "perivascular-11", "elongated-small"])
def test_compact_or_self_contained_nodules_are_not_vessels(feat: dict[str, float]) -> None:
    assert is_nodule(feat)
    assert not is_vessel_like(feat)


@pytest.mark.parametrize("feat", [
    _feat(21.43, 1.26, 1.72, 0.43, solidity=0.45, lung_fraction=0.89),  # dev seed 18, current
    _feat(23.75, 1.51, 1.33, 0.43, solidity=0.48),  # dev seed 37, current
], ids=["seed18", "seed37"])
def test_branching_shape_that_is_not_a_ball_is_a_vessel_confluence(feat: dict[str, float]) -> None:
    assert is_nodule(feat)
    assert is_vessel_like(feat)


@pytest.mark.parametrize("feat", [
    _feat(23.47, 1.58, 2.08, 0.54, solidity=0.60, lung_fraction=0.68),  # juxtapleural nodule, dev seed 13
    _feat(23.15, 1.08, 1.97, 0.93, solidity=0.48),  # a ball-like core with a branching mask: nodule
    _feat(19.39, 1.44, 1.87, 0.23, solidity=0.96, lung_fraction=0.48),  # juxtapleural, halved Hessian
], ids=["juxtapleural-13", "ball-core", "juxtapleural-22"])
def test_lobulated_or_juxtapleural_nodules_are_not_confluences(feat: dict[str, float]) -> None:
    assert is_nodule(feat)
    assert not is_vessel_like(feat)


@pytest.mark.parametrize("feat", [
    _feat(18.18, 1.84, 1.42, 0.53, solidity=0.91, lung_fraction=0.60, prolateness=1.24),  # dev seed 4 N3
    _feat(17.99, 1.91, 1.20, 0.19, solidity=0.96, lung_fraction=0.64, prolateness=1.06),  # dev seed 22 N1
    _feat(11.48, 1.85, 2.33, 0.40, solidity=0.96, lung_fraction=0.73, prolateness=1.28),  # dev seed 30 N2
], ids=["seed4", "seed22", "seed30"])
def test_juxtapleural_nodule_flattened_by_the_pleura_is_not_a_tube(feat: dict[str, float]) -> None:
    """Elongated (largest to smallest axis) because flat, not long: a lens against the wall. These
    were rejected as tubes (elongation > 1.75 and a Hessian that the wall halves)."""
    assert is_nodule(feat)
    assert is_lens_at_wall(feat)
    assert not is_vessel_like(feat)


@pytest.mark.parametrize("feat", [
    _feat(17.05, 2.53, 3.69, 0.37, solidity=0.58, lung_fraction=0.79, prolateness=1.22),  # dev seed 9
    _feat(17.96, 2.34, 3.67, 0.37, solidity=0.61, lung_fraction=0.88, prolateness=1.23),  # dev seed 13
    _feat(11.5, 1.90, 2.0, 0.40, solidity=0.90, lung_fraction=0.70, prolateness=1.80),  # a tube at the wall
    _feat(11.5, 1.85, 2.3, 0.40, solidity=0.96, lung_fraction=1.00, prolateness=1.28),  # flat, in the lung
], ids=["sheet-9", "sheet-13", "tube-at-wall", "flat-in-lung"])
def test_sheets_tubes_and_flat_pieces_inside_the_lung_are_still_vessels(feat: dict[str, float]) -> None:
    """Flat but not convex (curved pieces of pleura and vessel at the wall, dev false positives that
    the tube rule removes), long (a vessel along the wall), or flat away from the wall (where the
    Hessian is trusted and the pleura flattens nothing): the tube rule still applies."""
    assert is_nodule(feat)
    assert not is_lens_at_wall(feat)
    assert is_vessel_like(feat)


@pytest.mark.parametrize("feat, rule", [
    (_feat(6.71, 2.27, 30.2, 0.70), "vessel segment"),  # dev seed 18 (above)
    (_feat(9.0, 1.5, 3.0, 0.40, solidity=0.50), "branching"),
    (_feat(11.5, 1.85, 2.3, 0.40, solidity=0.96, prolateness=1.28), "tube"),  # flat, in the lung (above)
    (_feat(8.0, 1.3, 2.0, 0.25), "not a ball"),
    (_feat(14.0, 1.3, 6.0, 0.50), "confluence"),
    (_feat(8.0, 1.3, 9.0, 0.50, lung_fraction=0.8), "junction"),
    (_feat(5.0, 1.3, 16.0, 0.70), "small junction"),
    (_feat(8.0, 1.3, 2.0, 0.70), None),  # a nodule
])
def test_vessel_evidence_names_the_rule_that_fires(feat: dict[str, float], rule: str | None) -> None:
    """The detector's verdicts (logs, ``bench funnel``) name the rule; is_vessel_like agrees."""
    assert vessel_evidence(feat) == rule
    assert is_vessel_like(feat) == (rule is not None)


@pytest.mark.parametrize("feat, reason", [
    (_feat(3.5, 1.2, 1.0, 0.8), "too small"),
    (_feat(45.0, 1.2, 1.0, 0.8), "too large"),
    (_feat(8.0, 2.8, 1.0, 0.8), "elongated"),
    (_feat(8.0, 1.2, 1.0, 0.8, solidity=0.40), "not compact"),
    (_feat(8.0, 1.2, 1.0, 0.8), None),
])
def test_not_nodular_names_the_basic_shape_rule(feat: dict[str, float], reason: str | None) -> None:
    assert not_nodular(feat) == reason
    assert is_nodule(feat) == (reason is None)


def test_a_confirmed_ground_glass_ball_is_exempt_from_the_ball_and_confluence_rules_only() -> None:
    """Development seed 9's 15 mm ground-glass nodule (current): compact, 7 % of its region, glass
    Hessian 0.21. With its glass reading confirmed it is neither "not a ball" nor a (solid)
    confluence; the junction rule (leak > 8, Hessian < 0.55) still applies to a confirmed reading."""
    feat = _feat(15.26, 1.08, 7.31, 0.21, solidity=0.96)
    assert vessel_evidence(feat) == "not a ball"
    assert vessel_evidence({**feat, "glass_ball": 1.0}) is None
    assert vessel_evidence({**feat, "glass_ball": 1.0, "leak": 9.0}) == "junction"
