"""Shape rules that tell a nodule from a vessel, on a segmented mask's features.

Used by the detector (:mod:`inference.detection`) to verify its candidates and by the segmentation
(:mod:`inference.segmentation`) to judge its own retry, and by the analysis for seeded and propagated
nodules. The thresholds are geometric ratios (a vessel is a tube, a nodule is not), not densities, so
they do not depend on the scanner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import ConvexHull, QhullError

if TYPE_CHECKING:  # (segmentation imports this module)
    from .segmentation import NoduleSegmentation

MIN_DIAMETER_MM = 4.0
MAX_ELONGATION = 2.6  # ratio of largest to smallest principal SD; vessels are ≫ 3
MIN_SOLIDITY = 0.45  # mask / convex hull volume: branching vessel trees fall far below
MAX_DIAMETER_MM = 40.0  # beyond 30 mm a lesion is a mass; 40 leaves room for measurement error


def shape_features(seg: NoduleSegmentation, spacing_zyx: tuple[float, float, float]) -> dict[str, float]:
    """Equivalent diameter, elongation (largest to smallest principal SD), prolateness (largest to
    middle: a tube is long in one direction, a lens in two), compactness and leak of a segmentation."""
    sp = np.asarray(spacing_zyx, dtype=float)
    pts = np.argwhere(seg.mask).astype(float) * sp
    d_eq = float((6.0 * seg.volume_mm3 / np.pi) ** (1 / 3)) if seg.volume_mm3 > 0 else 0.0
    if len(pts) >= 4:
        # a voxel has extent: a uniform box of side s adds s²/12 variance along each axis (without
        # it a nodule that is one thick slice deep would look infinitely flat)
        ev = np.linalg.eigvalsh(np.cov(pts.T) + np.diag(sp ** 2 / 12.0))
        elong = float(np.sqrt(ev[-1] / max(ev[0], 1e-6)))
        prolate = float(np.sqrt(ev[-1] / max(ev[1], 1e-6)))
    else:
        elong = prolate = 99.0
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
    return {"d_eq_mm": d_eq, "elongation": elong, "prolateness": prolate, "fill": fill, "leak": leak,
            "solidity": solidity, "contrast_hu": seg.nodule_hu - seg.parenchyma_hu}


def not_nodular(feat: dict[str, float], *, min_diameter_mm: float = MIN_DIAMETER_MM) -> str | None:
    """Which basic shape rule a mask fails – ``"too small"``, ``"too large"``, ``"elongated"`` (a
    vessel) or ``"not compact"`` (a vessel tree) – or None when its shape is nodular."""
    if feat["d_eq_mm"] < min_diameter_mm:
        return "too small"
    if feat["d_eq_mm"] > MAX_DIAMETER_MM:
        return "too large"
    if feat["elongation"] > MAX_ELONGATION:
        return "elongated"
    if feat["solidity"] < MIN_SOLIDITY:
        return "not compact"
    return None


def is_nodule(feat: dict[str, float], *, min_diameter_mm: float = MIN_DIAMETER_MM) -> bool:
    """Nodular shape: size in range, not elongated (vessel), compact (not a vessel tree).

    ``min_diameter_mm`` is lowered for a nodule already known at the other time point (it may have
    shrunk below the detection size)."""
    return not_nodular(feat, min_diameter_mm=min_diameter_mm) is None


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
# A nodule against the pleura is a lens: the wall flattens it, so it is elongated (largest to smallest
# axis) without being long (largest to middle axis). A piece of tube is long: one just 1.1 diameters
# long already has a prolateness of 1.3. At the wall the Hessian cannot vouch for a ball (the
# envelope halves it), so the tube rule asks the mask itself: not long, and convex (a lens fills its
# hull; pleural sheets and vessel forks at the wall do not).
LENS_PROLATENESS = 1.3
LENS_SOLIDITY = 0.7


def is_lens_at_wall(feat: dict[str, float]) -> bool:
    """An elongated mask at the lung boundary that is flat rather than long, and convex: a
    juxtapleural nodule flattened by the pleura (see :data:`LENS_PROLATENESS`)."""
    return (feat.get("lung_fraction", 1.0) < 0.9 and feat.get("prolateness", 99.0) <= LENS_PROLATENESS
            and feat["solidity"] >= LENS_SOLIDITY)


def is_vessel_like(feat: dict[str, float]) -> bool:
    """Vessel pieces that pass the basic shape rules (:func:`is_nodule`); the rules are those of
    :func:`vessel_evidence`."""
    return vessel_evidence(feat) is not None


def vessel_evidence(feat: dict[str, float]) -> str | None:
    """The first vessel rule a mask meets (its name, for logs and the detector funnel), or None.

    * tube-like both ways: an elongated mask *and* a Hessian with one weak eigenvalue – unless, at the
      lung boundary, the mask is a convex lens (:func:`is_lens_at_wall`): long in two directions,
      as the pleura flattens a nodule, not in one, as a vessel is;
    * not a blob at its own scale although surrounded by lung (at the wall the lung envelope cuts a
      juxtapleural nodule in half, which lowers its Hessian sphericity, so this is not applied there;
      nor to a confirmed ground-glass reading, ``feat["glass_ball"]``: with the vessels that cross a
      ground-glass ball read as parenchyma, their channels leave the Hessian a ring or a plate –
      development seed 9's 15 mm nodule, a compact mask of 7 % of its region, reads 0.21 – and the
      mask, compact ground glass and not a speck of a larger region, is the evidence of a ball);
    * a small compact piece cut by the vessel opening out of a far larger dense tree (a junction or
      a vessel seen end-on); a small nodule on a vessel keeps most of its grown region;
    * a large piece of a much larger dense region that is not spherical at its own scale: where
      hilar vessels meet, the opening leaves a thick confluence that is neither tube nor ball (a
      confluence of vessels is solid: a confirmed ground-glass ball is exempt here too);
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
    in_lung = feat.get("lung_fraction", 1.0) >= 0.9
    if feat["elongation"] > TUBE_ELONGATION and feat["leak"] > JUNCTION_LEAK_RATIO:
        return "vessel segment"
    if feat["solidity"] < BRANCHING_SOLIDITY and blob < JUNCTION_BLOBNESS:
        return "branching"
    if feat["elongation"] > TUBE_ELONGATION and blob < TUBE_BLOBNESS and not is_lens_at_wall(feat):
        return "tube"
    if blob < MIN_BLOBNESS_IN_LUNG and in_lung and not feat.get("glass_ball"):
        return "not a ball"
    if (feat["d_eq_mm"] >= CONFLUENCE_DIAMETER_MM and feat["leak"] > CONFLUENCE_LEAK_RATIO
            and blob < CONFLUENCE_BLOBNESS and in_lung and not feat.get("glass_ball")):
        return "confluence"
    if feat["leak"] > JUNCTION_LEAK_RATIO and blob < JUNCTION_BLOBNESS:
        return "junction"
    if feat["d_eq_mm"] < SMALL_LEAK_DIAMETER_MM and feat["leak"] > SMALL_LEAK_RATIO:
        return "small junction"
    return None
