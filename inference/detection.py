"""Automatic nodule detection (nodules ≥ 4 mm, solid and subsolid), in two stages:

1. **Candidates** (:mod:`inference.candidates`) – multiscale blob detection on a ~1.5 mm copy of the
   lungs: local maxima of the inscribed radius of dense regions, a shell test against tubes, and the
   Hessian eigenvalues at each maximum, which separate blobs (three similar negative eigenvalues)
   from vessels (one eigenvalue ≈ 0). Outside the lung envelope the image is set to the parenchyma
   level so the chest wall does not respond, while juxtapleural nodules (inside the envelope) do.
2. **Verification** (here) – each candidate is segmented (``segmentation.py``) and kept if its shape
   is nodular by the rules of :mod:`inference.shape`: equivalent diameter ≥ 4 mm, not elongated
   (principal-axis ratio), compact, and not a leak into a vessel tree.

The thresholds are shape and physics rules (a vessel is a tube, a nodule is not; ground glass is at
least a few noise SDs above the parenchyma), not values fitted to a data set. Seeds from tracking and
annotations are in :mod:`inference.seeds` (re-exported here).
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage as ndi

from .candidates import blob_candidates, priority
from .lung import LungMask
from .morphology import block_any
from .registration import block_mean
from .seeds import Seed, SeedSource, seeds_from_annotations
from .segmentation import NoduleSegmentation, segment_nodule
from .shape import (BRANCHING_SOLIDITY, JUNCTION_LEAK_RATIO, SMALL_LEAK_DIAMETER_MM, SMALL_LEAK_RATIO,
                    TUBE_ELONGATION, is_nodule, is_vessel_like, not_nodular, shape_features, vessel_evidence)
from .types import CTVolume, VolumeGeometry
from .wall import is_embedded, tissue_contact

__all__ = ["Candidate", "Seed", "SeedSource", "detect_nodules", "is_nodule", "is_vessel_like", "judge_candidate",
           "seeds_from_annotations", "shape_features"]

log = logging.getLogger("noduletrack.inference.detection")


@dataclass
class Candidate:
    seed: Seed
    segmentation: NoduleSegmentation
    features: dict[str, float] = field(default_factory=dict)


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


def _glass_reading_holds(seg: NoduleSegmentation, feat: dict[str, float]) -> bool:
    """Does the segmentation confirm a candidate's ground-glass reading (a ball of ground glass with
    denser tissue beside it, :mod:`inference.candidates`)? It must be ground glass – one that
    segments as solid was a vessel and its blurred edge – and compact (not tube-like, not branching):
    set aside, the vessels of a bronchovascular bundle or a vessel's partial-volume edge on thick
    slices leave ground-glass-dense scraps that can pass for a ball at the candidate's scale. And it
    must not be a speck of a dense region many times its size: where vessels meet on a coarse grid
    (~1.5 mm pixels) their blurred edges make ground-glass-dense blobs of 4–7 mm. The plain reading
    lets the Hessian vouch for a ball cut out of a large region; this one has set the region's
    vessels aside, so it is held to the small-junction ratio at any size, and to the junction ratio
    when small."""
    speck = feat["leak"] > (JUNCTION_LEAK_RATIO if feat["d_eq_mm"] < SMALL_LEAK_DIAMETER_MM else SMALL_LEAK_RATIO)
    return (seg.nodule_hu < seg.solid_threshold_hu and feat["elongation"] <= TUBE_ELONGATION
            and feat["solidity"] >= BRANCHING_SOLIDITY and not speck)


def judge_candidate(vol: CTVolume, lung: LungMask, center_mm, radius_mm: float,
                    seed: Seed) -> tuple[Candidate | None, str]:
    """Segment a candidate and judge it by the shape rules: (the candidate, ``"nodule"``) when it is
    kept, else (None, why not) – ``"no segmentation"``, ``"ground-glass reading overruled"`` (and the
    plain shell test had failed), ``"shape: …"`` (:func:`inference.shape.not_nodular`), ``"vessel:
    …"`` (:func:`inference.shape.vessel_evidence`) or ``"wall"`` (a piece of chest wall or mediastinum)."""
    g = vol.geometry
    sx, sy, sz = g.spacing
    seg = segment_nodule(vol, lung, g.lps_to_index(np.asarray(center_mm, float)), radius_hint_mm=radius_mm)
    if seg is None:
        return None, "no segmentation"
    feat = shape_features(seg, (sz, sy, sx))
    feat["blob_score"] = seed.score
    feat["blobness"] = seed.blobness
    if seed.glass_reading and not _glass_reading_holds(seg, feat):
        # the plain reading holds instead
        if not seed.plain_shell_ok:
            return None, "ground-glass reading overruled"
        feat["blobness"] = seed.plain_blobness
    elif seed.glass_reading:
        feat["glass_ball"] = 1.0  # the segmentation confirmed it: a compact ball of ground glass
    feat["lung_fraction"] = seed.lung_fraction
    shape = not_nodular(feat)
    if shape is not None:
        return None, f"shape: {shape}"
    vessel = vessel_evidence(feat)
    if vessel is not None:
        return None, f"vessel: {vessel}"
    if is_embedded(tissue_contact(vol.hu, seg.mask, seg.offset, (sz, sy, sx), seg.solid_threshold_hu)):
        return None, "wall"  # a piece of wall/mediastinum that the lung envelope took in (inference/wall.py)
    return Candidate(seed, seg, feat), "nodule"


def detect_nodules(vol: CTVolume, lung: LungMask, *, max_candidates: int = 40,
                   executor: Executor | None = None,
                   record: list[tuple[str, Seed, str]] | None = None) -> list[Candidate]:
    """Automatic detector: blob candidates verified by segmentation and shape rules.

    Verification runs on a ~1.2 mm grid (:func:`_verification_grid`); the survivors are segmented
    and checked again on the full grid, and only those that pass both are returned.

    ``executor``: the candidates are verified by its workers (each verification is independent and
    the results are taken in candidate order, so the result is the same as without). The analysis
    passes one pool shared by both time points, so neither core idles while the other time point's
    candidates are still being verified.

    ``record``: every judgement is appended as (grid, seed, verdict) – grid ``"coarse"`` or ``"full"``,
    the verdict of :func:`judge_candidate` or ``"duplicate"`` – for diagnostics (``bench funnel``).
    """
    # budget the (costly) verification on the most nodule-like candidates
    seeds = sorted(blob_candidates(vol, lung, budget=max_candidates), key=lambda s: -priority(s))[:max_candidates]
    small, small_lung, f = _verification_grid(vol, lung)
    jobs = [(small, small_lung, s.center_mm, s.radius_mm, s) for s in seeds]
    coarse = _kept(jobs, _map(executor, jobs), "coarse", record)
    if f == (1, 1, 1):
        return coarse
    jobs = []
    for c in coarse:
        sg = c.segmentation
        peak_mm = small.geometry.index_to_lps(np.asarray(sg.peak_index, float))
        r_eq = 0.5 * (6.0 * max(sg.volume_mm3, 1.0) / np.pi) ** (1 / 3)
        jobs.append((vol, lung, peak_mm, max(r_eq, 2.0), c.seed))
    return _kept(jobs, _map(executor, jobs), "full", record)


def _kept(jobs: list[tuple], judged: list[tuple[Candidate | None, str]], grid: str,
          record: list[tuple[str, Seed, str]] | None) -> list[Candidate]:
    """The kept candidates of one verification round (``judged`` for ``jobs``), duplicates removed;
    each verdict appended to ``record`` when given."""
    kept = dedupe_candidates([c for c, _ in judged if c is not None])
    if log.isEnabledFor(logging.DEBUG):
        verdicts = Counter(v for _, v in judged)
        log.debug("%s verification: %d candidates, %d kept; %s", grid, len(jobs), len(kept),
                  ", ".join(f"{v} {n}" for v, n in verdicts.most_common()))
    if record is not None:
        ids = {id(c) for c in kept}
        for job, (c, verdict) in zip(jobs, judged):
            if c is not None and id(c) not in ids:
                verdict = "duplicate"
            record.append((grid, job[4], verdict))
    return kept


def _map(executor: Executor | None, jobs: list[tuple]) -> list[tuple[Candidate | None, str]]:
    """:func:`judge_candidate` of every job, in order (on ``executor``'s workers when given)."""
    if executor is None:
        return [judge_candidate(*job) for job in jobs]
    futures = [executor.submit(judge_candidate, *job) for job in jobs]
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
