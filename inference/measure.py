"""Clinical measurements of a segmented nodule → :class:`~inference.types.NoduleMeasurement`.

* Volume: partial-volume corrected (``segmentation.py``), mm³.
* Long axis: the longest in-plane diameter over all axial slices (Fleischner / Lung-RADS measure on
  axial images); short axis: the longest diameter perpendicular to it on the same slice.
  Diameters are measured on the half-maximum boundary, edge to edge (voxel centre distance plus one
  voxel along the direction), which is what calipers on the image would give.
* Mean diameter = (long + short) / 2 (CLINICAL.md).
* Solid component: the same mean diameter measured on the solid part.
* Consistency: solid when the nodule's own density (its envelope, see segmentation.py) is above
  halfway between parenchyma and soft tissue, or ≥ 80 % of its volume is; a solid component of at
  least ~1.5 mm inside ground glass → part-solid; otherwise ground glass.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from .segmentation import NoduleSegmentation
from .types import Consistency, CTVolume, NoduleMeasurement

SOLID_FRACTION_SOLID = 0.80  # solid volume / total volume at or above which a nodule is "solid"
MIN_SOLID_COMPONENT_MM = 1.5  # below this the "solid part" is noise or a crossing vessel


def _slice_diameters(mask2d: np.ndarray, dy: float, dx: float) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Long axis, longest perpendicular, and the long axis endpoints (row, col) of one 2-D mask."""
    edge = mask2d & ~ndi.binary_erosion(mask2d)
    pts = np.argwhere(edge).astype(float)
    if len(pts) == 0:
        pts = np.argwhere(mask2d).astype(float)
    if len(pts) == 1:
        p = pts[0]
        return max(dx, dy), max(dx, dy), p, p
    mm = pts * np.array([dy, dx])
    if len(mm) > 600:  # subsample very large outlines; diameters barely change
        idx = np.linspace(0, len(mm) - 1, 600).astype(int)
        mm, pts = mm[idx], pts[idx]
    d2 = ((mm[:, None, :] - mm[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    vec = mm[j] - mm[i]
    length = float(np.sqrt(d2[i, j]))
    u = vec / length if length > 0 else np.array([1.0, 0.0])
    # edge-to-edge: add one voxel's extent along the axis direction
    vox = float(np.hypot(u[0] * dy, u[1] * dx))
    long_axis = length + vox
    # perpendicular chords: bin all mask pixels by position along the long axis
    allpix = np.argwhere(mask2d).astype(float) * np.array([dy, dx])
    perp = np.array([-u[1], u[0]])
    along = (allpix - mm[i]) @ u
    across = allpix @ perp
    step = max(min(dx, dy), 1e-3)
    bins = np.floor(along / step).astype(int)
    short = 0.0
    order = np.argsort(bins)
    b_sorted, a_sorted = bins[order], across[order]
    splits = np.flatnonzero(np.diff(b_sorted)) + 1
    for chunk in np.split(a_sorted, splits):
        short = max(short, float(chunk.max() - chunk.min()))
    vox_p = float(np.hypot(perp[0] * dy, perp[1] * dx))
    short_axis = min(short + vox_p, long_axis)
    return long_axis, short_axis, pts[i], pts[j]


def axial_diameters(mask: np.ndarray, dy: float, dx: float) -> tuple[float, float, int, np.ndarray, np.ndarray]:
    """Long/short axis over all axial slices of ``mask`` (z, y, x): the slice with the longest long axis."""
    best = (0.0, 0.0, 0, np.zeros(2), np.zeros(2))
    areas = mask.sum(axis=(1, 2))
    for k in np.flatnonzero(areas):
        la, sa, p, q = _slice_diameters(mask[k], dy, dx)
        if la > best[0] or (la == best[0] and sa > best[1]):
            best = (la, sa, int(k), p, q)
    return best


def classify_consistency(volume_mm3: float, solid_volume_mm3: float, solid_diameter_mm: float,
                         envelope_solid: bool = False) -> Consistency:
    """Solid when the nodule's bulk (its envelope density) is solid or nearly all of it is solid;
    part-solid when a solid component of measurable size sits in ground glass; else ground glass."""
    if volume_mm3 <= 0:
        return "ground_glass"
    ratio = solid_volume_mm3 / volume_mm3
    if envelope_solid or ratio >= SOLID_FRACTION_SOLID:
        return "solid"
    if solid_diameter_mm >= MIN_SOLID_COMPONENT_MM:
        return "part_solid"
    return "ground_glass"


def measure(vol: CTVolume, seg: NoduleSegmentation) -> NoduleMeasurement:
    """All measurements of one segmented nodule, coordinates in ``vol``'s LPS space."""
    g = vol.geometry
    sx, sy, sz = g.spacing
    off = np.asarray(seg.offset)
    # centroid of the occupancy (partial-volume weighted)
    w = np.clip(seg.fraction, 0.0, 1.0).astype(np.float64)
    total = w.sum()
    if total <= 0:
        w = seg.mask.astype(np.float64)
        total = w.sum()
    idx = np.indices(w.shape).reshape(3, -1).T
    centroid = (idx * w.reshape(-1, 1)).sum(0) / total + off
    center = tuple(float(v) for v in g.index_to_lps(centroid))
    la, sa, k, p, q = axial_diameters(seg.mask, sy, sx)
    ends = []
    for pt in (p, q):
        zyx = np.array([k, pt[0], pt[1]], dtype=float) + off
        ends.append(tuple(float(v) for v in g.index_to_lps(zyx)))
    if seg.solid_mask.any():
        sla, ssa, *_ = axial_diameters(seg.solid_mask, sy, sx)
        solid_d = 0.5 * (sla + ssa)
    else:
        solid_d = 0.0
    consistency = classify_consistency(seg.volume_mm3, seg.solid_volume_mm3, solid_d,
                                       envelope_solid=seg.nodule_hu > seg.solid_threshold_hu)
    if consistency == "ground_glass":
        solid_d = 0.0
    box = tuple(slice(o, o + n) for o, n in zip(seg.offset, seg.mask.shape))
    hu_box = vol.hu[box]
    mean_hu = float(hu_box[seg.mask].mean()) if seg.mask.any() else float("nan")
    return NoduleMeasurement(
        center_mm=center,  # type: ignore[arg-type]
        volume_mm3=float(seg.volume_mm3),
        long_axis_mm=float(la),
        short_axis_mm=float(sa),
        mean_diameter_mm=float(0.5 * (la + sa)),
        solid_component_mm=float(solid_d),
        mean_hu=mean_hu,
        consistency=consistency,
        long_axis_endpoints_mm=(ends[0], ends[1]),  # type: ignore[arg-type]
        long_axis_slice=int(k + seg.offset[0]),
        mask=seg.mask,
        mask_offset=seg.offset,
        juxtapleural=seg.juxtapleural,
    )
