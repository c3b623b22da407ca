"""Automatic nodule detection (nodules ≥ 4 mm, solid and subsolid), in two stages:

1. **Candidates** (:mod:`inference.candidates`) – multiscale blob detection on a ~1.5 mm copy of the
   lungs: local maxima of the inscribed radius of dense regions, a shell test against tubes, and the
   Hessian eigenvalues at each maximum, which separate blobs (three similar negative eigenvalues)
   from vessels (one eigenvalue ≈ 0). Outside the lung envelope the image is set to the parenchyma
   level so the chest wall does not respond, while juxtapleural nodules (inside the envelope) do.
2. **Verification** (here) – each candidate is segmented (``segmentation.py``) and kept if its shape
   is nodular: equivalent diameter ≥ 4 mm, not elongated (principal-axis ratio), compact, and not a
   leak into a vessel tree.

The thresholds are shape and physics rules (a vessel is a tube, a nodule is not; ground glass is at
least a few noise SDs above the parenchyma), not values fitted to a data set. Seeds from tracking and
annotations are in :mod:`inference.seeds` (re-exported here).
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from .candidates import blob_candidates, priority
from .lung import LungMask
from .morphology import block_any
from .registration import block_mean
from .seeds import Seed, SeedSource, seeds_from_annotations
from .segmentation import NoduleSegmentation, segment_nodule
from .types import CTVolume, VolumeGeometry
from .wall import is_embedded, tissue_contact

__all__ = ["Candidate", "Seed", "SeedSource", "detect_nodules", "is_nodule", "is_vessel_like",
           "seeds_from_annotations", "shape_features"]

log = logging.getLogger("noduletrack.inference.detection")

MIN_DIAMETER_MM = 4.0
MAX_ELONGATION = 2.6  # ratio of largest to smallest principal SD; vessels are ≫ 3
MIN_SOLIDITY = 0.45  # mask / convex hull volume: branching vessel trees fall far below
MAX_DIAMETER_MM = 40.0  # beyond 30 mm a lesion is a mass; 40 leaves room for measurement error


@dataclass
class Candidate:
    seed: Seed
    segmentation: NoduleSegmentation
    features: dict[str, float] = field(default_factory=dict)


def shape_features(seg: NoduleSegmentation, spacing_zyx: tuple[float, float, float]) -> dict[str, float]:
    """Equivalent diameter, elongation (principal SD ratio), compactness and leak of a segmentation."""
    sp = np.asarray(spacing_zyx, dtype=float)
    pts = np.argwhere(seg.mask).astype(float) * sp
    d_eq = float((6.0 * seg.volume_mm3 / np.pi) ** (1 / 3)) if seg.volume_mm3 > 0 else 0.0
    if len(pts) >= 4:
        # a voxel has extent: a uniform box of side s adds s²/12 variance along each axis (without
        # it a nodule that is one thick slice deep would look infinitely flat)
        ev = np.linalg.eigvalsh(np.cov(pts.T) + np.diag(sp ** 2 / 12.0))
        elong = float(np.sqrt(ev[-1] / max(ev[0], 1e-6)))
    else:
        elong = 99.0
    dv = float(np.prod(spacing_zyx))
    # solidity: mask volume / convex hull volume (vessel trees ≪ nodules, even spiculated ones)
    solidity = 1.0
    if len(pts) >= 10:
        try:
            hull = ConvexHull(pts)
            solidity = float(min(1.0, seg.mask.sum() * dv / max(hull.volume + 0.5 * hull.area * min(spacing_zyx), 1e-6)))
        except QhullError:
            solidity = 1.0
    bbox_vol = float(np.prod(seg.mask.shape)) * dv
    fill = float(seg.mask.sum() * dv / max(bbox_vol, 1e-6))
    leak = float(seg.region_voxels * dv / max(seg.volume_mm3, 1e-6))
    return {"d_eq_mm": d_eq, "elongation": elong, "fill": fill, "leak": leak, "solidity": solidity,
            "contrast_hu": seg.nodule_hu - seg.parenchyma_hu}


def is_nodule(feat: dict[str, float], *, min_diameter_mm: float = MIN_DIAMETER_MM) -> bool:
    """Nodular shape: size in range, not elongated (vessel), compact (not a vessel tree).

    ``min_diameter_mm`` is lowered for a nodule already known at the other time point (it may have
    shrunk below the detection size)."""
    return (min_diameter_mm <= feat["d_eq_mm"] <= MAX_DIAMETER_MM and feat["elongation"] <= MAX_ELONGATION
            and feat["solidity"] >= MIN_SOLIDITY)


# Vessel evidence (shape of the segmented mask and of the image at the blob's scale), see
# :func:`is_vessel_like`. Chosen on development phantoms (seeds 0–99) to reject vessel pieces without
# losing nodules; they are geometric ratios, not densities, so they do not depend on the scanner.
TUBE_ELONGATION = 1.75  # principal SD ratio above which a mask is tube-like …
TUBE_BLOBNESS = 0.60  # … unless the Hessian at the blob's scale says "sphere" (λmin/λmax ≥ this)
MIN_BLOBNESS_IN_LUNG = 0.30  # inside the lung (not at the wall) a nodule is at least this spherical
SMALL_LEAK_DIAMETER_MM = 6.0  # a small "nodule" …
CONFLUENCE_DIAMETER_MM = 10.0  # a large "nodule" …
CONFLUENCE_LEAK_RATIO = 5.0  # … cut out of a dense region > 5× its volume …
CONFLUENCE_BLOBNESS = 0.55  # … that is not a sphere at its scale is a vessel confluence (hilum)
SMALL_LEAK_RATIO = 15.0  # … cut out of a dense region > 15× its volume is a vessel junction
JUNCTION_LEAK_RATIO = 8.0  # any piece cut out of a dense region > 8× its volume …
JUNCTION_BLOBNESS = 0.55  # … that is not a sphere at its scale is a junction, wherever it lies
BRANCHING_SOLIDITY = 0.55  # a mask filling less of its convex hull is branching (MIN_SOLIDITY is for trees)


def is_vessel_like(feat: dict[str, float]) -> bool:
    """Vessel pieces that pass the basic shape rules (:func:`is_nodule`).

    * tube-like both ways: an elongated mask *and* a Hessian with one weak eigenvalue;
    * not a blob at its own scale although surrounded by lung (at the wall the lung envelope cuts a
      juxtapleural nodule in half, which lowers its Hessian sphericity, so this is not applied there);
    * a small compact piece cut by the vessel opening out of a far larger dense tree (a junction or
      a vessel seen end-on); a small nodule on a vessel keeps most of its grown region;
    * a large piece of a much larger dense region that is not spherical at its own scale: where
      hilar vessels meet, the opening leaves a thick confluence that is neither tube nor ball;
    * the same at any size and also at the lung boundary (hilum, mediastinum): a piece that the
      opening cut out of a dense region many times its own volume *and* that is not a ball at its
      scale is a vessel junction. The lung-boundary exemption of the rules above exists because the
      envelope halves a juxtapleural nodule's Hessian sphericity; but the region grown for such a
      nodule is confined to the envelope, so it does not leak into a vessel tree many times its size;
    * an elongated piece cut out of a dense region many times its own volume is a vessel segment
      whatever the Hessian says: at the blob's scale a bifurcation looks like a ball, while a nodule
      on a vessel tree stays compact once the opening has cut the vessels off (on development
      phantoms, seeds 0–39, every true detection with such a leak had elongation ≤ 1.5);
    * a branching shape – the mask fills little of its convex hull – that is not a ball at its scale
      either is a confluence of vessels; a lobulated or spiculated nodule fills most of its hull or
      has a ball-like core (on seeds 0–39 no true detection had solidity < 0.6; the confluences
      that passed had 0.45–0.49 and a Hessian sphericity ≤ 0.52).
    """
    blob = feat.get("blobness", 1.0)
    if feat["elongation"] > TUBE_ELONGATION and feat["leak"] > JUNCTION_LEAK_RATIO:
        return True
    if feat["solidity"] < BRANCHING_SOLIDITY and blob < JUNCTION_BLOBNESS:
        return True
    if feat["elongation"] > TUBE_ELONGATION and blob < TUBE_BLOBNESS:
        return True
    if blob < MIN_BLOBNESS_IN_LUNG and feat.get("lung_fraction", 1.0) >= 0.9:
        return True
    if (feat["d_eq_mm"] >= CONFLUENCE_DIAMETER_MM and feat["leak"] > CONFLUENCE_LEAK_RATIO
            and blob < CONFLUENCE_BLOBNESS and feat.get("lung_fraction", 1.0) >= 0.9):
        return True
    if feat["leak"] > JUNCTION_LEAK_RATIO and blob < JUNCTION_BLOBNESS:
        return True
    return feat["d_eq_mm"] < SMALL_LEAK_DIAMETER_MM and feat["leak"] > SMALL_LEAK_RATIO


VERIFY_VOXEL_MM = 1.2  # verification grid: finer voxels are block-averaged towards this size


def _verification_grid(vol: CTVolume, lung: LungMask) -> tuple[CTVolume, LungMask, tuple[int, int, int]]:
    """The volume block-averaged to voxels of about ``VERIFY_VOXEL_MM`` (or itself when coarser).

    Verifying ~40 candidates by segmentation costs distance transforms on every crop; on a 0.6 mm
    grid that is ~4× the work of a 1.2 mm grid while the shape questions asked (tube or ball,
    compact or leaking) are answered at the coarser one for nodules ≥ 4 mm. Only the accepted
    candidates are segmented again at full resolution for measurement.
    """
    g = vol.geometry
    sx, sy, sz = g.spacing
    f = (max(1, int(round(VERIFY_VOXEL_MM / sz))), max(1, int(round(VERIFY_VOXEL_MM / sy))),
         max(1, int(round(VERIFY_VOXEL_MM / sx))))
    if f == (1, 1, 1):
        return vol, lung, f
    hu = block_mean(vol.hu, f)
    nz, ny, nx = hu.shape
    d = np.asarray(g.direction, dtype=float).reshape(3, 3)
    shift = d @ (np.array([(f[2] - 1) * sx, (f[1] - 1) * sy, (f[0] - 1) * sz]) / 2.0)
    geom = VolumeGeometry(origin=tuple(float(v) for v in np.asarray(g.origin) + shift),
                          spacing=(sx * f[2], sy * f[1], sz * f[0]), direction=g.direction, shape=(nz, ny, nx))
    small = CTVolume(hu=hu, geometry=geom, study_instance_uid=vol.study_instance_uid,
                     series_instance_uid=vol.series_instance_uid,
                     frame_of_reference_uid=vol.frame_of_reference_uid, sop_instance_uids=[])
    filled = block_any(lung.filled, f)
    small_lung = LungMask(filled=filled, coarse_filled=lung.coarse_filled, coarse_air=lung.coarse_air,
                          factors=lung.factors, stats=lung.stats)
    return small, small_lung, f


def _verify(vol: CTVolume, lung: LungMask, center_mm, radius_mm: float, seed: Seed) -> Candidate | None:
    g = vol.geometry
    sx, sy, sz = g.spacing
    seg = segment_nodule(vol, lung, g.lps_to_index(np.asarray(center_mm, float)), radius_hint_mm=radius_mm)
    if seg is None:
        return None
    feat = shape_features(seg, (sz, sy, sx))
    feat["blob_score"] = seed.score
    feat["blobness"] = seed.blobness
    feat["lung_fraction"] = seed.lung_fraction
    if not is_nodule(feat) or is_vessel_like(feat):
        return None
    if is_embedded(tissue_contact(vol.hu, seg.mask, seg.offset, (sz, sy, sx), seg.solid_threshold_hu)):
        return None  # a piece of wall/mediastinum that the lung envelope took in (inference/wall.py)
    return Candidate(seed, seg, feat)


def detect_nodules(vol: CTVolume, lung: LungMask, *, max_candidates: int = 40,
                   executor: Executor | None = None) -> list[Candidate]:
    """Automatic detector: blob candidates verified by segmentation and shape rules.

    Verification runs on a ~1.2 mm grid (:func:`_verification_grid`); the survivors are segmented
    and checked again on the full grid, and only those that pass both are returned.

    ``executor``: the candidates are verified by its workers (each verification is independent and
    the results are taken in candidate order, so the result is the same as without). The analysis
    passes one pool shared by both time points, so neither core idles while the other time point's
    candidates are still being verified.
    """
    # budget the (costly) verification on the most nodule-like candidates
    seeds = sorted(blob_candidates(vol, lung, budget=max_candidates), key=lambda s: -priority(s))[:max_candidates]
    small, small_lung, f = _verification_grid(vol, lung)
    coarse = [c for c in _map(executor, [(small, small_lung, s.center_mm, s.radius_mm, s) for s in seeds])
              if c is not None]
    coarse = dedupe_candidates(coarse)
    if f == (1, 1, 1):
        return coarse
    jobs = []
    for c in coarse:
        sg = c.segmentation
        peak_mm = small.geometry.index_to_lps(np.asarray(sg.peak_index, float))
        r_eq = 0.5 * (6.0 * max(sg.volume_mm3, 1.0) / np.pi) ** (1 / 3)
        jobs.append((vol, lung, peak_mm, max(r_eq, 2.0), c.seed))
    return dedupe_candidates([c for c in _map(executor, jobs) if c is not None])


def _map(executor: Executor | None, jobs: list[tuple]) -> list[Candidate | None]:
    """``_verify`` of every job, in order (on ``executor``'s workers when given)."""
    if executor is None:
        return [_verify(*job) for job in jobs]
    futures = [executor.submit(_verify, *job) for job in jobs]
    return [fut.result() for fut in futures]


def dedupe_candidates(cands: list[Candidate]) -> list[Candidate]:
    """Drop candidates whose segmentation peak falls inside an earlier (larger) one's mask."""
    cands = sorted(cands, key=lambda c: -c.segmentation.volume_mm3)
    kept: list[Candidate] = []
    for c in cands:
        pz, py, px = c.segmentation.peak_index
        dup = False
        for k in kept:
            s = k.segmentation
            oz, oy, ox = s.offset
            lz, ly, lx = pz - oz, py - oy, px - ox
            if 0 <= lz < s.mask.shape[0] and 0 <= ly < s.mask.shape[1] and 0 <= lx < s.mask.shape[2]:
                if ndi.binary_dilation(s.mask, iterations=1)[lz, ly, lx]:
                    dup = True
                    break
        if not dup:
            kept.append(c)
    return kept
