"""Match nodules across time points, give each a stable tracking UID, compute growth (CLINICAL.md).

Prior nodules are mapped into the current study through the registration transform (refined per
nodule). Matching is by *position*: a pair is possible when the mapped prior centre and the current
centre are within a gate that grows with the nodules' size (registration residual + centroid shift
of a growing or shrinking nodule, which is at most about its radius). Size is what we measure, so it
never vetoes a pair: a nodule that grew 35× between scans is still the same nodule when nothing else
is there. Within the gate, pairs are assigned by the Hungarian method on the normalised distance;
size change only breaks near-ties between competing candidates. A match's confidence is a distance
likelihood, lowered when another candidate competes for the same nodule (an ambiguous match).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.uid import generate_uid
from scipy.optimize import linear_sum_assignment

from .types import NoduleMeasurement

# expected error of mapped centres: registration residual (~2-3 mm after local refinement)
_BASE_TOL_MM = 3.0
# a pair farther apart than this many tolerances is two different nodules
_GATE_SIGMAS = 3.5
# weight of |ln(V2/V1)| in the assignment cost: a tie-breaker, small against a tolerance
_SIZE_TIEBREAK = 0.05


@dataclass(frozen=True)
class Match:
    prior_index: int
    current_index: int
    distance_mm: float
    confidence: float


def match_tolerance_mm(diameter_a_mm: float, diameter_b_mm: float) -> float:
    """Expected distance between the mapped prior centre and the current centre of one nodule.

    Registration residual plus the centroid shift of a nodule that grew or shrank asymmetrically,
    which scales with the larger of the two diameters.
    """
    return _BASE_TOL_MM + 0.25 * max(diameter_a_mm, diameter_b_mm)


def _tolerance(a: NoduleMeasurement, b: NoduleMeasurement) -> float:
    return match_tolerance_mm(a.mean_diameter_mm, b.mean_diameter_mm)


def match_confidence(distance_mm: float, tol_mm: float, v_prior: float | None = None,
                     v_current: float | None = None, competitors: int = 0) -> float:
    """Confidence in (0, 1] of a spatial match.

    Gaussian in distance/tolerance. Size change does not lower it (growth is what is measured, and
    it is reported separately); other candidates within the gate (``competitors``) do, because the
    assignment between them could be wrong. ``v_prior``/``v_current`` are accepted for callers that
    pass them and ignored.
    """
    c_dist = math.exp(-0.5 * (distance_mm / tol_mm) ** 2)
    return float(c_dist / (1.0 + competitors))


def match_nodules(prior_in_current: list[NoduleMeasurement], mapped_centers_mm: np.ndarray,
                  current: list[NoduleMeasurement]) -> list[Match]:
    """One-to-one assignment of prior nodules (centres mapped into the current study) to current ones.

    Pairs are gated by distance only; the Hungarian method minimises the summed squared normalised
    distance (plus a small size-change tie-breaker). Returns the pairs inside the gate.
    """
    if not prior_in_current or not current:
        return []
    n, m = len(prior_in_current), len(current)
    big = 1e6
    cost = np.full((n, m), big)
    dist = np.zeros((n, m))
    gate = np.zeros((n, m), dtype=bool)
    for i, a in enumerate(prior_in_current):
        for j, b in enumerate(current):
            d = float(np.linalg.norm(mapped_centers_mm[i] - np.asarray(b.center_mm)))
            tol = _tolerance(a, b)
            dist[i, j] = d
            if d <= _GATE_SIGMAS * tol:
                gate[i, j] = True
                size = abs(math.log(max(b.volume_mm3, 1e-3) / max(a.volume_mm3, 1e-3)))
                cost[i, j] = (d / tol) ** 2 + _SIZE_TIEBREAK * size
    rows, cols = linear_sum_assignment(cost)
    out = []
    for i, j in zip(rows, cols):
        if not gate[i, j]:
            continue
        a, b = prior_in_current[i], current[j]
        competitors = int(gate[i].sum() - 1 + gate[:, j].sum() - 1)
        out.append(Match(int(i), int(j), float(dist[i, j]),
                         match_confidence(dist[i, j], _tolerance(a, b), competitors=competitors)))
    return out


def volume_doubling_time(v1: float, v2: float, interval_days: float | None) -> float | None:
    """VDT = Δt·ln2 / ln(V2/V1) (CLINICAL.md). None when not growing (equal or decreasing) or no interval."""
    if interval_days is None or interval_days <= 0 or v1 <= 0 or v2 <= v1:
        return None
    return float(interval_days * math.log(2.0) / math.log(v2 / v1))


def volume_change_pct(v1: float, v2: float) -> float | None:
    if v1 <= 0:
        return None
    return float(100.0 * (v2 - v1) / v1)


def mint_tracking_uid(study_instance_uid: str, center_mm: tuple[float, float, float]) -> str:
    """Deterministic tracking UID for a nodule first seen in ``study_instance_uid`` at ``center_mm``.

    Rounded to 1 mm so that re-running the analysis on the same study yields the same UID.
    """
    key = ",".join(f"{round(v):d}" for v in center_mm)
    return generate_uid(entropy_srcs=["noduletrack-nodule", study_instance_uid, key])
