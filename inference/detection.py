"""Nodule seeds: tracked nodules, the prior's annotations (TID 1500 SR / SEG), and a detector.

Automatic detection (nodules ≥ 4 mm, solid and subsolid) works in two stages:

1. **Candidates** – multiscale blob detection on a ~1.5 mm copy of the lungs: the scale-normalised
   Laplacian of Gaussian ``−σ²∇²G_σ * I`` responds to bright blobs of radius ≈ σ√3; its local maxima
   above a contrast threshold (relative to this image's parenchyma and noise) are candidates.
   Outside the lung envelope the image is set to the parenchyma level so the chest wall does not
   respond, while juxtapleural nodules (inside the envelope) do. The Hessian eigenvalues at each
   maximum separate blobs (three similar negative eigenvalues) from vessels (one eigenvalue ≈ 0).
2. **Verification** – each candidate is segmented (``segmentation.py``) and kept if its shape is
   nodular: equivalent diameter ≥ 4 mm, not elongated (principal-axis ratio), compact, and not a
   leak into a vessel tree.

The thresholds are shape and physics rules (a vessel is a tube, a nodule is not; ground glass is at
least a few noise SDs above the parenchyma), not values fitted to a data set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import scipy.ndimage as ndi
from scipy.spatial import ConvexHull, QhullError, cKDTree

from .lung import LungMask
from .morphology import edt as distance_map
from .registration import block_mean, factors_for
from .segmentation import NoduleSegmentation, segment_nodule
from .types import CTVolume, VolumeGeometry

log = logging.getLogger("noduletrack.inference.detection")

SeedSource = Literal["tracked", "annotation", "detector", "propagated"]

MIN_DIAMETER_MM = 4.0
MAX_ELONGATION = 2.6  # ratio of largest to smallest principal SD; vessels are ≫ 3
MIN_SOLIDITY = 0.45  # mask / convex hull volume: branching vessel trees fall far below
MAX_DIAMETER_MM = 40.0  # beyond 30 mm a lesion is a mass; 40 leaves room for measurement error  # |λ_min| / |λ_max| of the Hessian at the candidate; 0 for a tube, 1 for a sphere


@dataclass
class Seed:
    """A point where a nodule is expected, in the LPS space of the study it belongs to."""

    center_mm: tuple[float, float, float]
    source: SeedSource
    tracking_uid: str | None = None
    tracking_id: str | None = None
    radius_mm: float = 5.0
    score: float = 0.0
    blobness: float = 1.0  # detector: |λ|min / |λ|max of the Hessian at the blob's scale (1 sphere, 0 tube)
    lung_fraction: float = 1.0  # detector: fraction of the surrounding shell inside the lung (< 1: at the wall)


@dataclass
class Candidate:
    seed: Seed
    segmentation: NoduleSegmentation
    features: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# seeds from annotations that arrived with the prior
# --------------------------------------------------------------------------------------------------

def seeds_from_annotations(paths: Iterable[Path | str], frame_of_reference_uid: str | None = None) -> list[Seed]:
    """Seed points from TID 1500 SR (image regions / 3-D coordinates) and SEG objects.

    SR: every SCOORD3D (POINT/POLYLINE/ELLIPSE...) gives its centroid; SCOORD on an image is mapped
    through the referenced slice's position when that slice's header is provided in the SR's own
    content (not available in general, so 2-D SCOORDs are skipped). Tracking UIDs (DCM 112040) in
    the same measurement group are carried over. SEG: each segment's centroid from the frames'
    Image Position (Patient). Files of other types are ignored.
    """
    import pydicom

    seeds: list[Seed] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue
        modality = str(ds.get("Modality", ""))
        if modality == "SR":
            seeds.extend(_sr_seeds(ds))
        elif modality == "SEG":
            seeds.extend(_seg_seeds(ds))
    if frame_of_reference_uid:
        seeds = [s for s in seeds if True]  # frame checked per object below when present
    return seeds


def _sr_seeds(ds) -> list[Seed]:
    out: list[Seed] = []

    def walk(items, uid: str | None, label: str | None) -> None:
        group_uid, group_label = uid, label
        for item in items:
            code = item.get("ConceptNameCodeSequence")
            cv = code[0].CodeValue if code else ""
            vt = item.get("ValueType", "")
            if vt == "UIDREF" and cv == "112040":
                group_uid = str(item.UID)
            if vt == "TEXT" and cv == "112039":
                group_label = str(item.TextValue)
        for item in items:
            vt = item.get("ValueType", "")
            if vt == "SCOORD3D" and "GraphicData" in item:
                pts = np.asarray([float(v) for v in item.GraphicData], dtype=float).reshape(-1, 3)
                c = pts.mean(axis=0)
                extent = float(np.max(np.linalg.norm(pts - c, axis=1))) if len(pts) > 1 else 5.0
                out.append(Seed(tuple(float(v) for v in c), "annotation", group_uid, group_label,
                                radius_mm=max(2.0, extent)))
            if "ContentSequence" in item:
                walk(item.ContentSequence, group_uid, group_label)

    if "ContentSequence" in ds:
        walk(ds.ContentSequence, None, None)
    # several SCOORD3Ds of one measurement group (e.g. long-axis endpoints) describe one nodule
    return _dedupe(out, 3.0)


def _seg_seeds(ds) -> list[Seed]:
    try:
        pixels = ds.pixel_array
    except Exception:
        return []
    if pixels.ndim == 2:
        pixels = pixels[None]
    pffg = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence")
    try:
        pm = shared[0].PixelMeasuresSequence[0]
        dy, dx = (float(v) for v in pm.PixelSpacing)
        iop = np.asarray([float(v) for v in shared[0].PlaneOrientationSequence[0].ImageOrientationPatient])
    except Exception:
        return []
    row, col = iop[:3], iop[3:]
    sums: dict[int, list[np.ndarray]] = {}
    labels: dict[int, tuple[str | None, str | None]] = {}
    for seg in ds.get("SegmentSequence") or []:
        uid = str(seg.get("TrackingUID", "")) or None
        tid = str(seg.get("TrackingID", "")) or None
        labels[int(seg.SegmentNumber)] = (uid, tid)
    for k, fg in enumerate(pffg):
        try:
            num = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            ipp = np.asarray([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient])
        except Exception:
            continue
        frame = pixels[k] > 0
        if not frame.any():
            continue
        rr, cc = np.nonzero(frame)
        pts = ipp + np.outer(cc * dx, row) + np.outer(rr * dy, col)
        sums.setdefault(num, []).append(pts)
    seeds = []
    for num, chunks in sums.items():
        pts = np.concatenate(chunks)
        c = pts.mean(axis=0)
        r = float(np.percentile(np.linalg.norm(pts - c, axis=1), 95))
        uid, tid = labels.get(num, (None, None))
        seeds.append(Seed(tuple(float(v) for v in c), "annotation", uid, tid, radius_mm=max(2.0, r)))
    return seeds


def _dedupe(seeds: list[Seed], dist_mm: float) -> list[Seed]:
    kept: list[Seed] = []
    for s in seeds:
        c = np.asarray(s.center_mm)
        if any(np.linalg.norm(c - np.asarray(k.center_mm)) < max(dist_mm, 0.5 * k.radius_mm) and
               (s.tracking_uid is None or s.tracking_uid == k.tracking_uid) for k in kept):
            continue
        kept.append(s)
    return kept


# --------------------------------------------------------------------------------------------------
# automatic detector
# --------------------------------------------------------------------------------------------------

def _fibonacci_sphere(n: int = 96) -> np.ndarray:
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5 ** 0.5) * k
    return np.stack([np.cos(phi), np.sin(phi) * np.sin(theta), np.sin(phi) * np.cos(theta)], axis=1)  # z, y, x


_SPHERE = _fibonacci_sphere()


def hessian_blobness(img: np.ndarray, point: np.ndarray, radius_mm: float,
                     spacing: np.ndarray) -> tuple[float, np.ndarray]:
    """Sphericity of the bright structure near ``point`` from the Hessian of ``img`` at scale ``r/√3``.

    A ball of radius r gives the strongest scale-normalised response at σ = r/√3 with three equal
    negative eigenvalues; a tube has one eigenvalue ≈ 0 along its axis, a plate (wall, fissure) two.
    The Hessian is read at the brightest point of the σ-smoothed image within ``r`` of ``point`` (the
    deepest point of a thresholded region is off-centre when a vessel crosses a faint nodule).
    Returns (|λ|min / |λ|max when all three are negative, else 0; that point's index).
    """
    sigma = max(radius_mm / np.sqrt(3.0), 0.8 * float(spacing.min()))
    half = np.ceil((3.0 * sigma + radius_mm) / spacing).astype(int) + 1
    p = np.asarray(point, int)
    lo = np.maximum(p - half, 0)
    hi = np.minimum(p + half + 1, np.asarray(img.shape))
    crop = img[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float64)
    s_vox = sigma / spacing
    smooth = ndi.gaussian_filter(crop, s_vox, mode="nearest")
    zz, yy, xx = np.ogrid[: crop.shape[0], : crop.shape[1], : crop.shape[2]]
    c0 = p - lo
    d2 = (((zz - c0[0]) * spacing[0]) ** 2 + ((yy - c0[1]) * spacing[1]) ** 2 + ((xx - c0[2]) * spacing[2]) ** 2)
    c = np.unravel_index(int(np.argmax(np.where(d2 <= radius_mm ** 2, smooth, -np.inf))), crop.shape)
    # second derivatives of the σ-smoothed image by central differences at that point (σ spans
    # several voxels, so differences are as good as Gaussian-derivative kernels and 6× cheaper)
    h = np.zeros((3, 3))
    ci = np.clip(np.asarray(c), 1, np.asarray(crop.shape) - 2)
    nb = smooth[ci[0] - 1: ci[0] + 2, ci[1] - 1: ci[1] + 2, ci[2] - 1: ci[2] + 2]
    for a in range(3):
        for b in range(a, 3):
            if a == b:
                ip, im = [1, 1, 1], [1, 1, 1]
                ip[a], im[a] = 2, 0
                v = nb[tuple(ip)] - 2.0 * nb[1, 1, 1] + nb[tuple(im)]
            else:
                pp, pm, mp, mm = ([1, 1, 1] for _ in range(4))
                pp[a], pp[b] = 2, 2
                pm[a], pm[b] = 2, 0
                mp[a], mp[b] = 0, 2
                mm[a], mm[b] = 0, 0
                v = 0.25 * (nb[tuple(pp)] - nb[tuple(pm)] - nb[tuple(mp)] + nb[tuple(mm)])
            h[a, b] = h[b, a] = v / (spacing[a] * spacing[b])
    ev = np.linalg.eigvalsh(h)
    at = np.asarray(c) + lo
    if ev[-1] >= 0:  # not a bright blob in every direction
        return 0.0, at
    mags = np.abs(ev)
    return float(mags.min() / mags.max()), at


def priority(seed: Seed) -> float:
    """Order of verification: large clean blobs first, but a tube (vessel) ranks far below a small
    sphere of the same inscribed radius."""
    return seed.score * (0.25 + seed.blobness)


def blob_candidates(vol: CTVolume, lung: LungMask, *, target_mm: float = 1.5,
                    min_radius_mm: float = 1.8, max_shell_fraction: float = 0.12,
                    budget: int | None = None) -> list[Seed]:
    """Compact dense blobs inside the lungs (see module docstring).

    1. ``dense`` = voxels of the lung envelope denser than the faintest ground glass worth reporting:
       ``P + max(12 % of (tissue − P), 4 σ)`` on a ~1.5 mm copy smoothed by ~1 mm.
    2. Inscribed radius = Euclidean distance to the nearest non-dense voxel; its local maxima of at
       least ``min_radius_mm`` (a 4 mm nodule has ~2 mm) are blob centres or vessel centre lines.
    3. Shell test: on a sphere of 1.6× the inscribed radius around the centre, a tube occupies two
       caps (≈ 2/(4·1.6²) ≈ 20 % of the shell, more at a bifurcation), a nodule only where vessels
       attach. Candidates whose shell is more than ``max_shell_fraction`` dense are vessels.
    4. Hessian sphericity (:func:`hessian_blobness`) of each, strongest first. With ``budget`` the
       result holds at least the ``budget`` highest-:func:`priority` candidates (and is cut where no
       further one could rank among them); without, every candidate.
    """
    g = vol.geometry
    f = factors_for(g, target_mm)
    sx, sy, sz = g.spacing
    spacing = np.array([sz * f[0], sy * f[1], sx * f[2]])
    stats = lung.stats
    zz, yy, xx = np.nonzero(lung.coarse_filled)
    if zz.size == 0:
        return []
    cf = np.asarray(lung.factors)
    lo_full = np.array([zz.min(), yy.min(), xx.min()]) * cf
    hi_full = (np.array([zz.max(), yy.max(), xx.max()]) + 1) * cf
    lo = lo_full // f
    hi = np.minimum(-(-hi_full // f), np.asarray(g.shape) // f)
    lo_full = lo * f
    hu = vol.hu[lo_full[0]: hi[0] * f[0], lo_full[1]: hi[1] * f[1], lo_full[2]: hi[2] * f[2]]
    img = block_mean(hu, f)
    env = lung.filled[lo_full[0]: hi[0] * f[0]: f[0], lo_full[1]: hi[1] * f[1]: f[1], lo_full[2]: hi[2] * f[2]: f[2]]
    env = env[: img.shape[0], : img.shape[1], : img.shape[2]]
    img = ndi.gaussian_filter(img, np.maximum(0.0, np.sqrt(np.maximum(1.0 - (spacing / 2.0) ** 2, 0.0))) / spacing)
    P = stats.parenchyma_hu
    # local parenchyma level: mean of the aerated lung within ~15 mm (normalised convolution), since
    # dependent lung is denser than non-dependent lung
    aer = (env & (img < stats.air_threshold)).astype(np.float32)
    wsum = ndi.gaussian_filter(aer, 15.0 / spacing)
    local = ndi.gaussian_filter(np.where(aer > 0, img, 0.0).astype(np.float32), 15.0 / spacing)
    local = np.where(wsum > 0.05, local / np.maximum(wsum, 1e-6), P)
    del aer, wsum
    noise = stats.noise_hu / np.sqrt(max(1.0, float(np.prod(f))))
    thr = max(0.12 * (stats.tissue_hu - P), 4.0 * noise)
    excess = (img - local).astype(np.float32)
    dense = (excess > thr) & env
    # for the Hessian: density above the local parenchyma, bounded at soft tissue (a solid nodule and
    # ground glass differ in contrast, not in shape) and zero outside the lung envelope (chest wall)
    bounded = np.where(env, np.clip(excess, 0.0, stats.tissue_hu - P), 0.0).astype(np.float32)
    del img, local
    edt = distance_map(dense, tuple(spacing))
    peaks = (edt >= min_radius_mm) & (edt == ndi.maximum_filter(edt, size=3))
    pts = np.argwhere(peaks)
    if len(pts) == 0:
        return []
    radii = edt[tuple(pts.T)]
    order = np.argsort(-radii, kind="stable")
    pts, radii = pts[order], radii[order]
    seeds: list[Seed] = []
    grid_points: list[tuple[np.ndarray, float]] = []
    shape = np.asarray(dense.shape)
    # greedy suppression: a maximum inside a larger (earlier) one's inscribed ball is the same blob
    pmm = pts * spacing
    tree = cKDTree(pmm)
    suppressed = np.zeros(len(pts), dtype=bool)
    for i, (p, r) in enumerate(zip(pts, radii)):
        if suppressed[i]:
            continue
        for j in tree.query_ball_point(pmm[i], float(r)):
            if j > i:
                suppressed[j] = True
        contrast = float(excess[tuple(p)])
        if contrast < thr:
            continue
        fracs = []
        inside_lung = 1.0
        for k in (1.6, 2.0, 2.5):
            rr = k * float(r) + 0.5 * float(spacing.min())
            sample = np.rint(p + _SPHERE * rr / spacing).astype(int)
            ok = np.all((sample >= 0) & (sample < shape), axis=1)
            vals = np.zeros(len(sample), dtype=bool)
            inl = np.zeros(len(sample), dtype=bool)
            vals[ok] = dense[tuple(sample[ok].T)]
            inl[ok] = env[tuple(sample[ok].T)]
            inside_lung = min(inside_lung, float(inl.mean()))
            # a nodule is surrounded by lung, at least on one side (juxtapleural: about half);
            # shell points in the wall/mediastinum are neither evidence for nor against a tube
            if inl.mean() < 0.35:
                fracs.append(1.0)
            else:
                fracs.append(float(vals[inl].mean()))
        shell = min(fracs)
        # large vessels are few and the shape test rejects them; large perivascular nodules have
        # several vessels in their shell: allow more there
        limit = max_shell_fraction if r < 4.0 else 2.0 * max_shell_fraction
        # at the wall the in-lung part of the shell runs along the pleura, whose partial-volume rim
        # is dense: a juxtapleural nodule's shell is busier than an intrapulmonary one's
        if inside_lung < 0.9:
            limit *= 2.0
        if shell > limit:
            continue
        c = p * f + lo_full + (np.asarray(f) - 1) / 2.0
        cmm = g.index_to_lps(c)
        # strength: clean shell × size — noise blobs are small, vessel pieces have busy shells
        seeds.append(Seed(tuple(float(v) for v in cmm), "detector", radius_mm=float(r) * 1.2,
                          score=(1.0 - shell) * float(r), blobness=float("nan"), lung_fraction=inside_lung))
        grid_points.append((p, float(r)))
    # strongest first; the Hessian (the costly part) is evaluated in that order, and with a budget
    # only until no later candidate can enter the budget's priority ranking (priority ≤ 1.25 × score)
    order = sorted(range(len(seeds)), key=lambda i: -seeds[i].score)
    out: list[Seed] = []
    best: list[float] = []  # priorities of evaluated seeds, descending
    for i in order:
        s = seeds[i]
        if budget is not None and len(best) >= budget and best[budget - 1] >= 1.25 * s.score:
            break
        p, r = grid_points[i]
        # the Hessian scale follows the blob's size; the inscribed radius of a dense region
        # underestimates a lobulated or spiculated nodule's, so a few scales are tried
        s.blobness = max(hessian_blobness(bounded, p, k * r, spacing)[0] for k in (0.8, 1.0, 1.4))
        out.append(s)
        best.append(priority(s))
        best.sort(reverse=True)
    return out


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
      nodule is confined to the envelope, so it does not leak into a vessel tree many times its size.
    """
    blob = feat.get("blobness", 1.0)
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
    filled = lung.filled[: nz * f[0], : ny * f[1], : nx * f[2]]
    filled = filled.reshape(nz, f[0], ny, f[1], nx, f[2]).any(axis=(1, 3, 5))
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
    return Candidate(seed, seg, feat)


def detect_nodules(vol: CTVolume, lung: LungMask, *, max_candidates: int = 40) -> list[Candidate]:
    """Automatic detector: blob candidates verified by segmentation and shape rules.

    Verification runs on a ~1.2 mm grid (:func:`_verification_grid`); the survivors are segmented
    and checked again on the full grid, and only those that pass both are returned.
    """
    # budget the (costly) verification on the most nodule-like candidates
    seeds = sorted(blob_candidates(vol, lung, budget=max_candidates), key=lambda s: -priority(s))[:max_candidates]
    small, small_lung, f = _verification_grid(vol, lung)
    coarse: list[Candidate] = []
    for seed in seeds:
        c = _verify(small, small_lung, seed.center_mm, seed.radius_mm, seed)
        if c is not None:
            coarse.append(c)
    coarse = dedupe_candidates(coarse)
    if f == (1, 1, 1):
        return coarse
    out: list[Candidate] = []
    for c in coarse:
        sg = c.segmentation
        peak_mm = small.geometry.index_to_lps(np.asarray(sg.peak_index, float))
        r_eq = 0.5 * (6.0 * max(sg.volume_mm3, 1.0) / np.pi) ** (1 / 3)
        full = _verify(vol, lung, peak_mm, max(r_eq, 2.0), c.seed)
        if full is not None:
            out.append(full)
    return dedupe_candidates(out)


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
