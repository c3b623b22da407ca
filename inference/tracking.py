"""Match nodules across time points, give each a stable tracking UID, compute growth (CLINICAL.md).

Prior nodules are mapped into the current study through the registration transform (refined per
nodule). Pairs are assigned by the Hungarian method on a cost that is mostly distance (normalised by
the expected registration + centroid error, which grows with nodule size) plus a small term for
implausible size change; pairs beyond a gate are not matched. A match's confidence is the product
of a distance and a size-consistency likelihood, in (0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydicom.uid import generate_uid
from scipy.optimize import linear_sum_assignment

from .types import NoduleMeasurement

# expected error of mapped centres: registration residual (~2 mm) plus centroid shift with growth
_BASE_TOL_MM = 3.0
_GATE_SIGMAS = 3.5
# beyond five doublings (or halvings) between two scans a "match" is more likely two different things
_MAX_VOLUME_RATIO = 32.0


@dataclass(frozen=True)
class Match:
    prior_index: int
    current_index: int
    distance_mm: float
    confidence: float


def _tolerance(a: NoduleMeasurement, b: NoduleMeasurement) -> float:
    return _BASE_TOL_MM + 0.25 * max(a.mean_diameter_mm, b.mean_diameter_mm)


def match_confidence(distance_mm: float, tol_mm: float, v_prior: float, v_current: float) -> float:
    """Likelihood-style confidence: Gaussian in distance/tolerance × tolerance for size change.

    Size change is expected (that is what is measured), so only extreme ratios (beyond 8× either
    way, i.e. three doublings) lower the confidence.
    """
    c_dist = math.exp(-0.5 * (distance_mm / tol_mm) ** 2)
    ratio = abs(math.log(max(v_current, 1e-3) / max(v_prior, 1e-3)))
    c_size = math.exp(-0.5 * max(0.0, ratio - math.log(8.0)) ** 2)
    return float(c_dist * c_size)


def match_nodules(prior_in_current: list[NoduleMeasurement], mapped_centers_mm: np.ndarray,
                  current: list[NoduleMeasurement]) -> list[Match]:
    """Hungarian assignment of prior nodules (with centres mapped into the current study) to current ones."""
    if not prior_in_current or not current:
        return []
    n, m = len(prior_in_current), len(current)
    cost = np.full((n, m), 1e6)
    dist = np.zeros((n, m))
    for i, a in enumerate(prior_in_current):
        for j, b in enumerate(current):
            d = float(np.linalg.norm(mapped_centers_mm[i] - np.asarray(b.center_mm)))
            tol = _tolerance(a, b)
            dist[i, j] = d
            ratio = max(b.volume_mm3, 1e-3) / max(a.volume_mm3, 1e-3)
            if d <= _GATE_SIGMAS * tol and 1.0 / _MAX_VOLUME_RATIO <= ratio <= _MAX_VOLUME_RATIO:
                size = abs(math.log(max(b.volume_mm3, 1e-3) / max(a.volume_mm3, 1e-3)))
                cost[i, j] = (d / tol) ** 2 + 0.1 * size
    rows, cols = linear_sum_assignment(cost)
    out = []
    for i, j in zip(rows, cols):
        if cost[i, j] >= 1e6:
            continue
        a, b = prior_in_current[i], current[j]
        out.append(Match(int(i), int(j), float(dist[i, j]),
                         match_confidence(dist[i, j], _tolerance(a, b), a.volume_mm3, b.volume_mm3)))
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
