"""Segment one nodule around a seed point: solid and subsolid, juxtapleural, vessel-attached.

Method (all thresholds are relative to densities measured in the same image):

1. A crop around the seed; the *local lung envelope* is the aerated lung closed with a ball a bit
   larger than the nodule, so a nodule on the pleura or mediastinum is inside it and the chest wall
   is not (the wall's surface is smooth at the nodule's scale, the nodule is a bump on it).
2. Local parenchyma density ``P`` = median of the aerated lung in the crop; its robust SD ``σ``.
3. Region growing from the densest point near the seed at a low threshold ``P + max(3σ, 50)`` (low
   enough to include ground glass), restricted to the envelope.
4. Vessels leave the region: a morphological opening with a ball of ~half the nodule's inscribed
   radius cuts thin tubes, the seed's component is kept and its margin restored within the region.
   The inscribed radius is read at the densest point. When that point is off-centre in a large
   nodule (pulled to the pleura, or on a vessel at the edge of ground glass) the ball is too small
   and the mask leaks into the vessels: if the result is not compact and the region is much deeper
   within the expected radius, the opening is sized and centred at that deepest point instead, and
   that result is kept only if it is compact and not a small piece carved out of a large dense
   region (see :func:`segment_nodule`).
   Two cases the opening alone gets wrong: a *ground-glass* nodule touching a solid vessel (the
   vessel looks wider than it is at the low threshold; the opening is then sized and applied on the
   ground glass alone, :func:`_depth_without_solid_neighbours`), and a subsolid nodule on a vessel
   *thicker* than itself (cut off at the narrowest passage between the two,
   :func:`_thicker_neighbour_split`).
   A seeded ground-glass nodule (tracked, annotated, propagated from the other study) whose mask is
   still not compact is cut radially: seen from its centre, vessels as thick as half the nodule are
   narrow spokes of the region (:mod:`inference.radial`). Not for detector candidates: there the
   same cut makes nodule-shaped blobs of vessel junctions and bronchial walls.
5. The nodule's own density ``D`` is read from its core: the ground-glass level when a subsolid
   component is present, else the solid level.
6. Boundary = half-way between ``P`` and ``D`` (the half-maximum of a blurred edge is the true edge).
   Volume counts interior voxels fully and boundary voxels by their fractional occupancy
   ``(HU − P)/(D − P)`` – partial-volume correction, which matters most for small nodules.
7. The solid component of a subsolid nodule is what is denser than halfway between its ground glass
   ``D`` and soft tissue (the same half-maximum rule), without vessels: thin ones by a 1.2 mm
   opening, thicker ones running into the nodule by an opening with a ball wider than the vessel
   where it enters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from .lung import ImageStats, LungMask
from .morphology import ball_close, ball_open, dilate, edt, fill_holes, repeat_into, upper_end
from .radial import radial_cut
from .shape import JUNCTION_LEAK_RATIO, is_nodule, shape_features
from .types import CTVolume


@dataclass
class NoduleSegmentation:
    """A segmented nodule on the volume grid (cropped box) with the densities used."""

    mask: np.ndarray  # bool, half-maximum mask (for diameters and SEG), cropped box
    offset: tuple[int, int, int]  # (z, y, x) of mask[0,0,0]
    fraction: np.ndarray  # float32 occupancy over the same box (volume = sum · dV); band voxels may be < 0 (noise)
    solid_mask: np.ndarray  # bool, solid component (denser than halfway parenchyma→tissue), same box
    volume_mm3: float
    solid_volume_mm3: float
    parenchyma_hu: float
    nodule_hu: float  # D: density of the nodule's envelope (ground glass or solid)
    solid_threshold_hu: float  # halfway parenchyma → soft tissue: denser = solid
    peak_index: tuple[int, int, int]  # full-grid (z, y, x)
    juxtapleural: bool
    touches_crop: bool
    opening_mm: float
    region_voxels: int  # size of the low-threshold region before vessel removal (leak indicator)
    # deepest inscribed radius of the region within the expected radius of the peak / that at the
    # peak (≫ 1: the peak is off-centre in a larger body, see segment_nodule)
    depth_ratio: float = 1.0
    # how vessels were cut off: "opening" (ball opening, margins restored), "radial" (inference.radial)
    vessel_cut: str = "opening"


def _ball_open(mask: np.ndarray, radius_mm: float, sampling: tuple[float, float, float]) -> np.ndarray:
    """Opening with a ball via EDT: keep points covered by a ball of ``radius_mm`` inside ``mask``."""
    return ball_open(mask, radius_mm, sampling)


def _closing(mask: np.ndarray, radius_mm: float, sampling: tuple[float, float, float],
             fine: bool = False) -> np.ndarray:
    """Binary closing with a ball; on a ≥ 1.2 mm copy when the grid is finer (a 5–22 mm ball does not
    need sub-millimetre steps, and the distance transforms dominate segmentation time), unless
    ``fine``."""
    if fine:
        return _closing_fine(mask, radius_mm, sampling)
    # a ball of radius R is resolved well enough with ~R/6 steps (and never finer than 1.2 mm)
    step = max(1.2, radius_mm / 6.0)
    f = tuple(max(1, int(step // s)) for s in sampling)
    if f != (1, 1, 1):
        shp = [n // k * k for n, k in zip(mask.shape, f)]
        if min(shp) > 0:
            m = mask[: shp[0], : shp[1], : shp[2]]
            # "all": the coarse envelope must not reach into the wall (a sheet of wall would join the nodule)
            m = m.reshape(shp[0] // f[0], f[0], shp[1] // f[1], f[1], shp[2] // f[2], f[2]).all(axis=(1, 3, 5))
            c = _closing_fine(m, radius_mm, tuple(s * k for s, k in zip(sampling, f)))
            return mask | repeat_into(c, f, mask.shape)
    return _closing_fine(mask, radius_mm, sampling)


def _closing_fine(mask: np.ndarray, radius_mm: float, sampling: tuple[float, float, float]) -> np.ndarray:
    return ball_close(mask, radius_mm, sampling, pad_mode="edge")


def _sq_dist(zz: np.ndarray, yy: np.ndarray, xx: np.ndarray, point, sampling: tuple[float, float, float]
             ) -> np.ndarray:
    """Squared distance (mm²) of voxels (index grids or lists ``zz, yy, xx``) to ``point`` (z, y, x)."""
    return (((zz - point[0]) * sampling[0]) ** 2 + ((yy - point[1]) * sampling[1]) ** 2
            + ((xx - point[2]) * sampling[2]) ** 2)


def _component_at(mask: np.ndarray, point: tuple[int, int, int], sampling, max_dist_mm: float = 3.0) -> np.ndarray:
    """Connected component of ``mask`` containing ``point`` (or the nearest one within ``max_dist_mm``)."""
    labels, n = ndi.label(mask)
    if n == 0:
        return np.zeros_like(mask)
    lab = labels[point]
    if lab == 0:
        dist, idx = ndi.distance_transform_edt(labels == 0, sampling=sampling, return_indices=True)
        if dist[point] > max_dist_mm:
            return np.zeros_like(mask)
        lab = labels[tuple(i[point] for i in idx)]
    return labels == lab


def _label_max(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Maximum of ``values`` over each label 1..``n`` of ``labels`` (as ``ndi.maximum``, whose
    sort of the whole crop cost more than the rest of the stub test)."""
    out = np.full(n + 1, -np.inf)
    m = labels > 0
    np.maximum.at(out, labels[m], values[m].astype(np.float64))
    return out[1:]


def _face_pairs(a: np.ndarray, b: np.ndarray) -> dict[int, set[int]]:
    """For each label of ``a``, the labels of ``b`` at a face-neighbouring voxel (or the same one)."""
    out: dict[int, set[int]] = {}
    for ax in range(3):
        for sh in (1, -1):
            src = [slice(None)] * 3
            dst = [slice(None)] * 3
            src[ax] = slice(0, -1) if sh == 1 else slice(1, None)
            dst[ax] = slice(1, None) if sh == 1 else slice(0, -1)
            la, lb = a[tuple(src)], b[tuple(dst)]
            m = (la > 0) & (lb > 0)
            for x, y in set(zip(la[m].tolist(), lb[m].tolist())):
                out.setdefault(int(x), set()).add(int(y))
    m = (a > 0) & (b > 0)
    for x, y in set(zip(a[m].tolist(), b[m].tolist())):
        out.setdefault(int(x), set()).add(int(y))
    return out


def _solid_part(dense: np.ndarray, sampling: tuple[float, float, float]) -> np.ndarray:
    """The solid component within ``dense`` (voxels above the solid threshold): a vessel crossing
    ground glass is not a solid component; subsegmental vessels (≤ ~2.4 mm across) are removed by an
    opening with a 1.2 mm ball, a solid part survives it."""
    if not dense.any() or dense.all():
        return dense
    # (on the box of ``dense``: the opening of a mask lies within it)
    box = ndi.find_objects(dense.astype(np.int8))[0]
    box = tuple(slice(max(0, b.start - int(np.ceil(1.2 / sp)) - 1), min(n, b.stop + int(np.ceil(1.2 / sp)) + 1))
                for b, sp, n in zip(box, sampling, dense.shape))
    out = np.zeros_like(dense)
    out[box] = _ball_open(dense[box], 1.2, sampling)
    return out


def _without_crossing_vessels(solid: np.ndarray, nodule: np.ndarray, dense_out: np.ndarray,
                              sampling: tuple[float, float, float]) -> np.ndarray:
    """The solid part of a subsolid nodule without the vessels that run into it from outside.

    A vessel entering ground glass stays dense inside it and, thicker than the 1.2 mm opening of
    :func:`_solid_part`, looks like a solid component. Its own thickness is measured where it meets
    the nodule (``dense_out``: dense voxels outside the nodule, i.e. vessels, next to a solid piece):
    of each solid piece touching one, only what contains balls larger than that vessel's radius is
    a solid part (a solid core that a vessel runs into keeps its core; a vessel alone vanishes).
    """
    labels, n = ndi.label(solid)
    if n == 0 or not dense_out.any():
        return solid
    vessel_r = edt(dense_out, sampling)
    step = min(sampling[1:])
    out = solid.copy()
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(0, b.start - 2), min(n_, b.stop + 2)) for b, n_ in zip(box, solid.shape))
        piece = labels == i
        contact = np.zeros(solid.shape, dtype=bool)
        contact[box] = ndi.binary_dilation(piece[box], iterations=2) & dense_out[box] & ~nodule[box]
        if not contact.any():
            continue
        rho = float(vessel_r[contact].max()) + 0.5 * step
        depth = edt(piece, sampling)
        centres = depth > rho
        kept = dilate(centres, rho, sampling) & piece if centres.any() else centres
        if kept.any():
            # the opening keeps balls of radius rho only, while the core holds balls up to its largest
            # inscribed radius: its outer layer that much thicker is restored (and a vessel stub as
            # long, not the vessel)
            kept = piece & dilate(kept, float(depth.max()) - rho + 0.5 * step, sampling)
        out &= ~piece | kept
    return out


def _blur_width(sampling: tuple[float, float, float]) -> float:
    """The width of a blurred edge in this image: an in-plane voxel, at least 1 mm (slices may be
    thicker; see :func:`_ground_glass_rim` for how a thick slice is counted)."""
    return max(1.0, sampling[1], sampling[2])


# A ground-glass layer about two blur widths thick leaves a plateau of only 2–5 % of the region, a
# solid nodule's edge none (≤ 0.2 % on phantoms; ``tests/test_segment_part_solid.py``). A region
# that reaches the lung boundary can run along the wall, and its scattered partial-volume voxels
# make a few per cent of "plateau" (a 6 mm solid juxtapleural nodule on 1.6 mm pixels: 16 voxels,
# 4 % of a 1240 mm³ region, 6–16 mm from its solid part), so there a layer must be thicker to count.
# (Where the blur width is the pixel, about half of the voxels one pixel from an edge pass "farther
# than a blur width" by the EDT's float rounding; made strict, part-solid nodules on 1.4–1.8 mm
# pixels lost their layer – held-out 1005 N4 at 256²: +4 → −31 % – so it is left as it is.)
LAYER_FRACTION = 0.02
LAYER_FRACTION_AT_WALL = 0.05


def _ground_glass_rim(s1: np.ndarray, region: np.ndarray, t_solid: float, t_min: float,
                      sampling: tuple[float, float, float], envelope: np.ndarray | None = None,
                      solid: np.ndarray | None = None) -> float | None:
    """Density of a ground-glass layer around a solid part, or None when there is none.

    The edge of a solid nodule is blurred: between it and the parenchyma lies a ramp of intermediate
    densities about one blur width wide. A part-solid nodule instead has a *plateau* of subsolid
    density: voxels of the region that are farther than a blur width from both the solid part and the
    region's outer boundary. When such voxels make a real layer (≥ :data:`LAYER_FRACTION` of the
    region, :data:`LAYER_FRACTION_AT_WALL` when the region reaches the lung envelope's edge, and ≥ 8
    voxels) and their median is subsolid, that median is the ground-glass level. Voxels within a
    blur width of the lung envelope's edge are not counted: at the pleura the wall's partial-volume
    rim has subsolid density too.

    The solid part is taken as measured (:func:`_solid_part`): specks of dense ground glass above
    the threshold and thin vessels crossing the ground glass are not a solid part the plateau would
    have to keep its distance from (with them, dense ground glass showed no plateau at all).
    ``solid``: that solid part when the caller has it already.

    The plateau is narrowed one condition at a time, and the search ends as soon as too few voxels
    are left for a layer (most often: a solid nodule, whose ramp is thinner than a blur width); the
    conditions are the same, so is the answer, without the distance transforms that cannot change it.
    """
    blur = _blur_width(sampling)
    # Along z a slice thicker than that blurs over the whole slice: the slice just above or below a
    # solid nodule's cap holds a layer of intermediate density as thick as a slice, which is partial
    # volume, not a ground-glass layer. So one slice never counts as more than a blur width here
    # (measured in millimetres, that layer of a solid nodule on 2–2.5 mm slices was a "plateau": the
    # nodule became part-solid, its boundary drawn at the layer's half-maximum, +37 to +53 % volume
    # on held-out 512² phantoms). Thin slices keep their millimetres.
    rim_sampling = (min(sampling[0], 0.999 * blur), sampling[1], sampling[2])
    if solid is None:
        solid = _solid_part(region & (s1 > t_solid), sampling)
    if not solid.any() or solid.all():
        return None
    def too_few(m: np.ndarray, fraction: float = LAYER_FRACTION) -> bool:
        n = int(m.sum())
        return n < 8 or n < fraction * int(region.sum())

    plateau = region & ~solid
    if too_few(plateau):
        return None
    plateau &= edt(region, rim_sampling) > blur
    if too_few(plateau):
        return None
    # (distances are needed on the region only: its box is transformed, see morphology.upper_end)
    plateau &= edt(~solid, rim_sampling, upto=upper_end(region)) > blur
    fraction = LAYER_FRACTION
    if envelope is not None and not envelope.all() and not too_few(plateau):
        reach = tuple(int(np.ceil(blur / s)) + 1 for s in rim_sampling)
        from_edge = edt(envelope, rim_sampling, upto=upper_end(region, reach))
        if (region & (from_edge <= blur)).any():
            fraction = LAYER_FRACTION_AT_WALL
        plateau &= from_edge > blur
    if too_few(plateau, fraction):
        return None
    level = float(np.median(s1[plateau]))
    if not t_min < level < t_solid:
        return None
    return level


def segment_nodule(
    vol: CTVolume,
    lung: LungMask,
    seed_index: np.ndarray | tuple[float, float, float],
    *,
    radius_hint_mm: float = 5.0,
    search_mm: float | None = None,
    split_far: bool = False,
) -> NoduleSegmentation | None:
    """Segment the nodule nearest ``seed_index`` (fractional z, y, x); None if nothing nodular is there.

    ``split_far``: a seeded nodule (tracked, annotated, propagated) whose mask is not compact is also
    tried cut off from a vessel about as thick as itself (:func:`_far_neighbour_split`), and, when
    ground glass and still not compact, radially (:mod:`inference.radial`; pixels ≤ 1 mm only). Not for detector
    candidates, where both turn vessel pieces into nodule-shaped blobs.
    """
    g = vol.geometry
    sx, sy, sz = g.spacing
    sampling = (sz, sy, sx)
    stats: ImageStats = lung.stats
    r_hint = float(np.clip(radius_hint_mm, 2.0, 25.0))
    seed = np.asarray(seed_index, dtype=float)
    search = search_mm if search_mm is not None else max(2.5, 0.6 * r_hint)

    for attempt in range(2):
        half_mm = max(10.0, 1.6 * r_hint + 5.0) * (1.6 ** attempt)
        half = np.array([half_mm / sz, half_mm / sy, half_mm / sx])
        lo = np.maximum(np.floor(seed - half).astype(int), 0)
        hi = np.minimum(np.ceil(seed + half).astype(int) + 1, np.asarray(g.shape))
        if np.any(hi - lo < 3):
            return None
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        result = _segment_crop(vol.hu[sl], lung.filled[sl], stats, seed - lo, sampling, r_hint, search, lo)
        if result is None:
            return None
        retry = attempt == 0 and not is_nodule(shape_features(result, sampling), min_diameter_mm=2.0)
        if retry:
            # not compact: if the nodule is ground glass touching solid vessels, the opening sized on
            # the full region left the vessels on (they look wider than they are at its threshold);
            # try the opening on the ground glass alone and keep it only if it is compact and most
            # of its region (an already compact result is never changed: on a lobulated nodule with
            # vessels crossing it, the channels they leave in the ground glass cost a lobe)
            alt = _segment_crop(vol.hu[sl], lung.filled[sl], stats, seed - lo, sampling, r_hint, search, lo,
                                glass_depth=True)
            if alt is not None and _retry_is_better(alt, sampling):
                result, retry = alt, False
        if retry and split_far:
            # still not compact: a vessel about as thick as the nodule (more than the opening's
            # ~0.6 of its inscribed radius) survived the opening; cut the nodule off where it parts
            # from what reaches far beyond it, and keep that only if compact and most of its region
            alt = _segment_crop(vol.hu[sl], lung.filled[sl], stats, seed - lo, sampling, r_hint, search, lo,
                                far_split=True)
            if alt is not None and _retry_is_better(alt, sampling):
                result, retry = alt, False
        if retry and result.depth_ratio >= DEEPER:
            # the opening sized at the peak did not cut the vessels off (a tree, not a nodule), and
            # the region is much deeper near the peak than at it: the peak lies off-centre in a large
            # nodule (on a vessel in or at the edge of ground glass, or pulled to the pleura), where
            # the region is thin. Try the opening sized and centred at the deepest point of the region
            # within the expected radius of the peak; keep it only if that gives a compact mask (an
            # already compact result is never changed) that is most of its region: a wider ball
            # centred on the thickest point of a vessel tree carves a compact blob out of it, a
            # piece many times smaller than the dense region it was cut from (the detector's
            # junction evidence, which it can only weigh against the blob test at its own scale).
            # On the first crop only: the second, larger one (a nodule larger than its hint) costs
            # ~4× as much per try, and on dev phantoms the retries there were hilar vessel trees
            # (3–8 s of CPU per pair, as much as all other crops together)
            alt = _segment_crop(vol.hu[sl], lung.filled[sl], stats, seed - lo, sampling, r_hint, search, lo,
                                centre_on_depth=True)
            if alt is not None and _retry_is_better(alt, sampling):
                result = alt
        crop = (sl, lo, r_hint)
        r_eq = 0.5 * (6 * result.volume_mm3 / np.pi) ** (1 / 3)
        # a mask reaching the crop edge is either a nodule larger than its hint (retry with a larger
        # crop) or a leak into vessels: a mask much larger than the hint (a larger crop would only make
        # it worse, and slow) or mostly cut away by the vessel opening is returned for the shape test
        leaky = result.region_voxels * float(np.prod(sampling)) > 3.0 * max(result.volume_mm3, 1e-6)
        if not result.touches_crop or r_eq < 0.5 * half_mm or r_eq > 1.5 * r_hint + 2.0 or leaky:
            break
        r_hint = max(r_hint, 1.5 * r_eq)
    if (split_far and max(sy, sx) <= RADIAL_MAX_PIXEL_MM
            and not is_nodule(shape_features(result, sampling), min_diameter_mm=2.0)):
        # still not compact, in the last crop tried: vessels about as thick as the opening ball, or a
        # ground-glass ball crossed by solid vessels. Seen from the nodule's centre they are narrow
        # spokes of the region (:mod:`inference.radial`); cut them there, and keep that only if
        # compact, most of its region, and not a short piece of a vessel (see RADIAL_MAX_PROLATENESS)
        sl, lo, r_hint = crop
        alt = _segment_crop(vol.hu[sl], lung.filled[sl], stats, seed - lo, sampling, r_hint, search, lo,
                            radial=True)
        if alt is not None and _radial_is_better(alt, sampling):
            result = alt
    return result


# "much deeper": the opening grows with the inscribed radius, so a point this much deeper would set a
# ball this much wider (at 1.5× a 2 mm ball becomes 3 mm: vessels of 4–6 mm are cut, not kept)
DEEPER = 1.5


# The radial cut of a vessel piece (centred on the vessel) is a short piece of it: the cut leaves
# ~1.7 vessel radii along the axis and one across (prolateness ~1.6–1.9 on development phantoms); a
# nodule's body is about as long in its two longest directions
RADIAL_MAX_PROLATENESS = 1.4
# The radial cut tells a ground-glass body from the solid vessels on it: at coarser pixels a 3 mm
# vessel is two pixels wide, and where vessels cross they blur to ground-glass density (development
# phantoms at 256², 1.4–1.7 mm pixels: a resolved nodule re-found as such a blob, two other false
# tracks)
RADIAL_MAX_PIXEL_MM = 1.0


def _radial_is_better(seg: NoduleSegmentation, sampling: tuple[float, float, float]) -> bool:
    """Is a radial cut's result a nodule by the shape rules (:func:`inference.shape.is_nodule`, at
    least the detection size across: below it the body is a few voxels, and a vessel as thick as
    it), not a short piece of a vessel (:data:`RADIAL_MAX_PROLATENESS`), and ground glass as the
    cut assumed (a body that measures solid is where solid vessels cross: the cut carves a blob out
    of them)?"""
    feat = shape_features(seg, sampling)
    return (is_nodule(feat) and feat["prolateness"] <= RADIAL_MAX_PROLATENESS
            and seg.nodule_hu < seg.solid_threshold_hu)


def _retry_is_better(seg: NoduleSegmentation, sampling: tuple[float, float, float]) -> bool:
    """Is a retry's result a nodule by the detector's shape rules on size (≥ 2 mm), elongation and
    solidity (:func:`inference.shape.is_nodule`), and not a piece carved out of a dense region more
    than the junction ratio times its volume (:data:`inference.shape.JUNCTION_LEAK_RATIO`)?"""
    feat = shape_features(seg, sampling)
    return is_nodule(feat, min_diameter_mm=2.0) and feat["leak"] <= JUNCTION_LEAK_RATIO


def _segment_crop(hu_c: np.ndarray, lung_c: np.ndarray, stats: ImageStats, seed: np.ndarray,
                  sampling: tuple[float, float, float], r_hint: float, search_mm: float,
                  offset: np.ndarray, centre_on_depth: bool = False,
                  glass_depth: bool = False, far_split: bool = False,
                  radial: bool = False) -> NoduleSegmentation | None:
    """Segment the nodule in one crop (see the module docstring).

    ``centre_on_depth``: the vessel-cutting opening is sized and centred at the deepest point of the
    region (largest inscribed ball) reachable from the peak within the expected radius, instead of at
    the peak; None when that is the peak's own depth (nothing different to try).
    ``glass_depth``: the opening is sized and applied on the ground glass alone
    (:func:`_depth_without_solid_neighbours`); None when the nodule is not ground glass beside solid
    tissue.
    ``far_split``: the nodule is cut off from a vessel about as thick as itself
    (:func:`_far_neighbour_split`); None when there is no such cut to make, or when the
    thicker-vessel split already made one (the result would be the plain one).
    """
    sz, sy, sx = sampling
    hu = hu_c.astype(np.float32)
    # light smoothing (~0.5 mm) for thresholds, more (~1 mm) for finding the peak
    s1 = ndi.gaussian_filter(hu, [0.5 / s for s in sampling])
    # the nodule centre is the brightest point at the nodule's own scale: at ~half its radius a thin
    # vessel next to a ground-glass nodule is diluted while the nodule stays bright
    s2 = ndi.gaussian_filter(hu, [max(1.0, 0.4 * r_hint) / s for s in sampling])
    air = (s1 < stats.air_threshold) & lung_c
    if air.sum() < 50:
        return None
    # parenchyma reference: aerated voxels of this neighbourhood
    P = float(np.median(hu[air]))
    sigma = float(1.4826 * np.median(np.abs(s1[air] - np.median(s1[air]))))
    tissue = stats.tissue_hu
    t_solid = 0.5 * (P + tissue)

    # densest point within the search radius of the seed, inside the lung envelope
    zz, yy, xx = np.ogrid[: hu.shape[0], : hu.shape[1], : hu.shape[2]]
    d2 = _sq_dist(zz, yy, xx, seed, sampling)
    near = (d2 <= search_mm ** 2) & lung_c
    if not near.any():
        return None
    # Near the (coarse) lung boundary – juxtapleural or juxtamediastinal – the envelope is recomputed
    # at full resolution first: aerated lung closed with a ball a bit larger than the nodule, so the
    # nodule (a bump on the wall) is inside and the wall is not. Otherwise the densest point near the
    # seed may be the wall itself and the "nodule" grown from it a sheet of chest wall.
    env_edge = lung_c & ~ndi.binary_erosion(lung_c, border_value=1)
    envelope = lung_c
    fine_envelope = False
    closing_mm = float(np.clip(1.3 * r_hint + 2.0, 5.0, 22.0))
    if (env_edge & (d2 <= (search_mm + r_hint) ** 2)).any():
        # on the crop's own grid: the coarse copy (reduced with "all") shrinks the air by up to a
        # block first, and a nodule against the wall lost more of its base (development seed 22's
        # 19 mm nodule −7.8 % instead of −4.0 %, seed 13's −10.9 % instead of −3.9 %)
        envelope = fill_holes(_closing(air, closing_mm, sampling, fine=True))
        fine_envelope = True
        near &= envelope
        if not near.any():
            return None
    cand = np.where(near, np.minimum(s2, tissue + 200.0), -np.inf)
    peak = np.unravel_index(int(np.argmax(cand)), hu.shape)
    contrast = float(s2[peak]) - P
    min_contrast = max(4.0 * sigma, 60.0)
    if contrast < min_contrast:
        return None

    t_low = P + max(3.0 * sigma, 50.0, 0.15 * min(contrast, tissue - P))
    dense = s1 > t_low
    region = _component_at(dense & envelope, peak, sampling, max_dist_mm=1.5)
    if not region.any():
        return None
    # a region that reaches the coarse boundary from a seed farther inside: same fine envelope
    if not fine_envelope and (region & env_edge).any():
        envelope = fill_holes(_closing(air, closing_mm, sampling))
        region = _component_at(dense & envelope, peak, sampling, max_dist_mm=1.5)
        if not region.any():
            return None
    region_voxels = int(region.sum())
    # inscribed radius near the peak sets the opening that cuts vessels thinner than the nodule
    if glass_depth:
        glass = _depth_without_solid_neighbours(region, s1, s2, near, peak, seed, r_hint, t_solid, sampling)
        if glass is None:
            return None  # not a ground-glass nodule beside solid tissue: nothing different to try
        inside, peak = glass
    else:
        inside = edt(region, sampling)
    # the deepest point of the region within the expected radius of the peak, connected to it there:
    # in a large nodule whose densest point is a vessel near its edge, the nodule's centre
    dp2 = _sq_dist(zz, yy, xx, peak, sampling)
    reachable = _component_at(region & (dp2 <= r_hint ** 2), peak, sampling, max_dist_mm=1.5)
    deep = np.unravel_index(int(np.argmax(np.where(reachable, inside, -1.0))), hu.shape)
    depth_ratio = float(inside[deep] + 0.5 * min(sampling)) / float(inside[peak] + 0.5 * min(sampling))
    if centre_on_depth:
        if inside[deep] <= inside[peak] + 0.5 * max(sampling):
            return None
        peak = deep
    # measured at the peak (not the neighbourhood max: a thick vessel next to the nodule would set
    # an opening too wide to cut it off), and no wider than the expected nodule radius allows
    r_in = float(min(inside[peak] + 0.5 * min(sampling), 1.5 * r_hint + 1.0))
    # the opening cuts vessels thinner than ~2ρ. Small nodules meet only thin vessels, and a wider
    # ball would turn a vessel junction into a compact blob; nodules of ≥ ~10 mm may sit on vessels
    # 6–8 mm thick (hilar, perivascular), so the ball grows towards 3/4 of the inscribed radius
    k_open = 0.55 + 0.2 * float(np.clip((r_in - 3.0) / 2.0, 0.0, 1.0))
    rho = float(np.clip(k_open * r_in, 0.5 * min(sampling[1:]) + 0.01, 6.0))
    inner = inside > rho
    if inner.any():
        opened_all = dilate(inner, rho, sampling)
        opened = _component_at(opened_all & region, peak, sampling, max_dist_mm=rho + 2.0)
    else:
        opened = np.zeros_like(region)
    if not opened.any():
        opened = region & (np.sqrt(d2) <= max(r_in, 1.0))
    if glass_depth:
        # solid tissue enclosed by the ground glass (left out of the depth map) is the nodule's
        opened = fill_holes(opened) & region
    if radial:
        # the star-shaped body around the region's deepest point, its vessel spokes cut. Ground
        # glass only: a vessel is another tissue there, while a solid body with solid spokes may
        # as well be where vessels cross (the cut leaves a compact blob of vessel)
        if s2[deep] >= t_solid:
            return None
        reach = min(max(2.0 * r_in, 1.5 * r_hint) + 2.0, float(np.min(np.asarray(hu.shape) * np.asarray(sampling))))
        # solid tissue (vessels, with their blurred edge) beside or across the ground glass ends the
        # rays (a solid part around the centre is crossed, see inference.radial.ray_extent)
        stop = dilate(region & (s1 > t_solid), _blur_width(sampling), sampling)
        # the body's surface at the half-maximum of the nodule's own density (its ground glass, read
        # within half its inscribed radius of the centre, vessels left out), as the mask's elsewhere
        body_region = None
        own = region & ~stop & (_sq_dist(zz, yy, xx, deep, sampling) <= max(0.5 * r_in, 1.5 * max(sampling)) ** 2)
        if own.sum() >= 8:
            body_region = region & (s1 > 0.5 * (P + float(np.median(s1[own]))))
        opened = _component_at(radial_cut(region, np.asarray(deep, float), sampling, reach, stop=stop,
                                          body_region=body_region) & region, deep, sampling)
        if not opened.any():
            return None
        peak = deep
    # (subsolid nodules only: for solid ones the split made compact pieces of vessels next to thicker
    # vessels, which passed as nodules – 2 of 30 development pairs at 256²)
    neck = (_thicker_neighbour_split(inside, region, opened, peak, rho, sampling)
            if s2[peak] < t_solid and not radial else None)
    if far_split:
        if neck is not None:
            return None  # the plain segmentation made this cut already: nothing different to try
        neck = _far_neighbour_split(inside, region, opened, peak, rho, sampling, FAR_HINTS * r_hint)
        if neck is None:
            return None  # no vessel to cut off: nothing different to try
    if neck is not None:
        opened, rho = neck
    # restore margins (lobulation, short spicules) lost by the opening, within the region (the radial
    # cut keeps them: a margin is a cone's width, a vessel stub would come back)
    if radial:
        restored = opened
    else:
        from_body = edt(~opened, sampling, upto=upper_end(region))
        restored = region & (from_body <= rho)
    # what the restoration added back is a spicule or lobulation when it ends there, a vessel stub
    # when the region continues beyond it (the vessel goes on): drop the stubs. A spicule longer
    # than the opening ball continues beyond too, but it ends near the nodule: a continuation that
    # stays within the nodule's radius of its body and does not leave the crop is a spicule (kept,
    # with the stub), one that goes on is a vessel.
    extra = restored & ~opened
    spicules = np.zeros(region.shape, dtype=bool)
    if extra.any():
        beyond = region & ~restored
        labels, n = ndi.label(extra)
        if n:
            touching = np.unique(labels[ndi.binary_dilation(beyond) & extra])
            touching = touching[touching > 0]
            if touching.size:
                # (at the resolution limit – an opening ball of under two voxels – a strand beyond the
                # ball is not resolved from noise and neighbouring partial volume: stubs go)
                resolved = rho >= 2.0 * max(sampling[1:])
                b_labels, nb = ndi.label(beyond)
                # per continuation: does it leave the crop, how far from the body does it reach
                edge = np.zeros(region.shape, dtype=bool)
                edge[[0, -1], :, :] = edge[:, [0, -1], :] = edge[:, :, [0, -1]] = True
                leaves = _label_max(edge, b_labels, nb).astype(bool)
                reach = _label_max(from_body, b_labels, nb)
                # which continuations each stub touches (face neighbours, as binary_dilation's)
                pairs = _face_pairs(labels, b_labels)
                vessel_stubs = set()
                for t in touching:
                    ids = pairs.get(int(t), set())
                    if not resolved or any(leaves[i - 1] or reach[i - 1] > r_in for i in ids):
                        vessel_stubs.add(int(t))
                    else:
                        spicules |= np.isin(b_labels, list(ids))
                stubs = np.isin(labels, [int(t) for t in touching])
                spicules |= stubs & ~np.isin(labels, list(vessel_stubs))
                dropped = stubs & ~spicules
                if centre_on_depth and dropped.any():
                    # the wide opening of a large nodule leaves its margin (at the pleura, where the
                    # envelope meets it at an angle, or an oblate shape) as one piece around the body:
                    # a vessel touching it makes the whole margin a "stub". A stub is where a vessel
                    # crosses the margin, so only what lies within the opening's radius of the
                    # vessel's continuation goes.
                    ids = {i for t in vessel_stubs for i in pairs.get(t, set())
                           if not resolved or leaves[i - 1] or reach[i - 1] > r_in}
                    dropped &= dilate(np.isin(b_labels, list(ids)), rho + max(sampling), sampling)
                restored &= ~dropped
                restored |= spicules
    # the nodule's density is read without the spicules (thin: mostly partial volume), on the same
    # body as without this rule; its boundary includes them
    mask_lo = _component_at(restored, peak, sampling)
    body_lo = mask_lo & ~spicules

    # nodule density from its core: ground glass level if a subsolid part exists, else solid level
    depth = np.where(body_lo, inside, 0.0)
    # the inner half of the radius: deep enough that blur (slice thickness) has not lowered it
    core = depth >= max(min(sampling), 0.5 * float(np.max(depth)))
    if core.sum() < 8:
        core = depth >= np.max(depth) * 0.6
    core_vals = s1[core]
    solid_core = core_vals > t_solid
    rim_dense = body_lo & (s1 > t_solid)
    rim_solid = _solid_part(rim_dense, sampling)
    gg_level = _ground_glass_rim(s1, body_lo, t_solid, P + min_contrast, sampling, envelope, solid=rim_solid)
    if gg_level is not None:
        # a solid core inside a ground-glass envelope (part-solid): the nodule's boundary is the
        # ground glass's, so its level sets the half-maximum threshold
        D = gg_level
    elif solid_core.mean() >= 0.7 or (~solid_core).sum() < 8:
        # upper quartile: at the resolution limit blur lowers most of a small core; noise only a little
        D = float(np.percentile(core_vals[solid_core] if solid_core.any() else core_vals, 75))
        if float(np.max(depth)) < 2.5 * max(sampling):
            # too small for its core to reach full density at this resolution: a solid nodule is soft
            # tissue, and this image's own soft tissue is the best estimate of that density
            D = max(D, tissue)
    else:
        D = float(np.median(core_vals[~solid_core]))
    if D - P < min_contrast:
        D = P + min_contrast
    t_half = 0.5 * (P + D)
    half = _component_at(mask_lo & (s1 > t_half), peak, sampling, max_dist_mm=2.0)
    if not half.any():
        return None
    # partial-volume volume: interior counts 1, a 1-voxel band either side of the edge by occupancy
    interior = ndi.binary_erosion(half)
    grown = ndi.binary_dilation(half, iterations=2) & envelope
    # exclude other dense structures (vessels cut off, chest wall) from the band
    others = (s1 > t_low) & ~mask_lo
    band = grown & ~interior & ~others
    frac = np.zeros(hu.shape, dtype=np.float32)
    # no clipping at 0: noise in the parenchyma is zero-mean and must cancel, not add up
    frac[band] = np.clip((s1[band] - P) / (D - P), -1.0, 1.0)
    frac[interior] = 1.0
    dv = sz * sy * sx
    volume = float(frac.sum() * dv)
    # the solid component of a subsolid nodule: denser than halfway between its ground glass and soft
    # tissue (the half-maximum of the solid part's own edge, as the outer boundary is the half-maximum
    # between parenchyma and the envelope). The parenchyma–tissue midpoint alone lies inside the
    # range of ground glass (≈ −750…−300 HU), so dense ground glass would count as "solid".
    t_core = t_solid if D >= t_solid else max(t_solid, 0.5 * (D + tissue))
    solid = half & (s1 > t_core)
    if solid.any():
        # (often the very mask the ground-glass test opened: a solid nodule without spicules)
        solid = rim_solid if np.array_equal(solid, rim_dense) else _solid_part(solid, sampling)
        if D < t_solid and solid.any():
            solid = _without_crossing_vessels(solid, half, (s1 > t_solid) & ~half & envelope, sampling)
    solid_volume = float(solid.sum() * dv)

    bbox = ndi.find_objects(half.astype(np.int8))[0]
    margin = 2
    box = tuple(slice(max(0, b.start - margin), min(n, b.stop + margin)) for b, n in zip(bbox, hu.shape))
    touches = any(b.start == 0 or b.stop == n for b, n in zip(bbox, hu.shape))
    # juxtapleural: the nodule reaches the envelope boundary (pleura/mediastinum)
    env_edge = envelope & ~ndi.binary_erosion(envelope, border_value=1)
    juxta = bool((ndi.binary_dilation(half, iterations=1) & env_edge & ~air).sum() > 3)
    off = tuple(int(o + b.start) for o, b in zip(offset, box))
    return NoduleSegmentation(
        mask=half[box].copy(),
        offset=off,  # type: ignore[arg-type]
        fraction=frac[box].copy(),
        solid_mask=solid[box].copy(),
        volume_mm3=volume,
        solid_volume_mm3=solid_volume,
        parenchyma_hu=P,
        nodule_hu=D,
        solid_threshold_hu=t_solid,
        peak_index=tuple(int(o + p) for o, p in zip(offset, peak)),  # type: ignore[arg-type]
        juxtapleural=juxta,
        touches_crop=touches,
        opening_mm=rho,
        region_voxels=region_voxels,
        depth_ratio=depth_ratio,
        vessel_cut="radial" if radial else "opening",
    )


# a nodule's centre is solid (a part-solid nodule's solid component) when this fraction of the ball
# of half its expected radius is; a vessel touching a ground-glass nodule reaches a few voxels of it
# (the detector's centre can lie ~1 voxel off the nodule's, towards the vessel)
SOLID_CENTRE_FRACTION = 0.25


def _depth_without_solid_neighbours(region: np.ndarray, s1: np.ndarray, s2: np.ndarray, near: np.ndarray,
                                    peak: tuple[int, int, int], seed: np.ndarray, r_hint: float, t_solid: float,
                                    sampling: tuple[float, float, float]
                                    ) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """The inscribed-radius map that sizes the vessel-cutting opening, and the peak it is read at.

    The region is grown at a low threshold (a few noise SDs above the parenchyma), where a solid
    vessel (~900 HU of contrast) appears wider than it is: its blurred edge stays above that level
    about a blur width beyond its true surface. A 3 mm vessel touching a 6 mm ground-glass nodule
    then survives the opening sized to the nodule, and the mask runs along it (and the densest point
    at the nodule's scale sits on the nodule's side next to the vessel, where the region is thin).

    When the nodule is ground glass at its own scale (the peak of the nodule-scale image ``s2`` is
    below the solid threshold) and its centre is ground glass (less than
    :data:`SOLID_CENTRE_FRACTION` of the ball of half the expected radius around the ``seed`` is
    solid: more is a solid component, and the nodule is part-solid), solid voxels elsewhere and
    everything within a blur width of them are left out of the map: the ground glass alone sets the
    opening, and the peak moves to the deepest ground glass within the search ball (``near``) – the
    nodule's centre – when it lay next to solid tissue.
    Vessels, denser than a ground-glass nodule, are then cut where they touch it; the mask is still
    grown on the full region (a vessel crossing the nodule is restored where it lies within it).
    None otherwise (solid and part-solid nodules, no solid tissue in the region, or no ground glass
    left near the seed): the plain map of the region is the one to use.
    """
    if s2[peak] >= t_solid:
        return None
    solid = region & (s1 > t_solid)
    if not solid.any():
        return None
    zz, yy, xx = np.ogrid[: s1.shape[0], : s1.shape[1], : s1.shape[2]]
    centre_ball = _sq_dist(zz, yy, xx, seed, sampling) <= (0.5 * r_hint) ** 2
    if centre_ball.any() and float(solid[centre_ball].mean()) >= SOLID_CENTRE_FRACTION:
        return None
    glass = region & ~dilate(solid, _blur_width(sampling), sampling)
    depth = edt(glass, sampling)
    centre = peak
    if not glass[peak]:
        cand = np.where(near & glass, depth, 0.0)
        if cand.max() <= 0.0:
            return None
        centre = tuple(int(v) for v in np.unravel_index(int(np.argmax(cand)), cand.shape))  # type: ignore[assignment]
    return depth, centre


# a nodule is cut from a thicker structure it touches (a large vessel, the heart) where the passage
# between them is narrower than this fraction of the nodule's own inscribed radius; a lobe or an
# ellipsoid's second maximum joins its body much wider than that
NECK_RATIO = 0.8
THICKER = 1.2  # "thicker": an inscribed radius this many times the nodule's (plus half a voxel)


def _ascend(depth: np.ndarray, start: tuple[int, int, int]) -> tuple[int, int, int]:
    """Steepest ascent of ``depth`` from ``start`` over 26-neighbours: the local maximum it climbs to."""
    p = np.asarray(start)
    shape = np.asarray(depth.shape)
    while True:
        lo = np.maximum(p - 1, 0)
        hi = np.minimum(p + 2, shape)
        nb = depth[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        q = np.asarray(np.unravel_index(int(np.argmax(nb)), nb.shape)) + lo
        if depth[tuple(q)] <= depth[tuple(p)]:
            return tuple(int(v) for v in p)  # type: ignore[return-value]
        p = q


def _thicker_neighbour_split(inside: np.ndarray, region: np.ndarray, opened: np.ndarray,
                             peak: tuple[int, int, int], rho: float, sampling: tuple[float, float, float]
                             ) -> tuple[np.ndarray, float] | None:
    """Separate a nodule from a thicker structure it touches, where the opening left them joined.

    The opening (ball of radius ``rho``) cuts vessels thinner than the nodule; a nodule on a *thicker*
    vessel (or on the heart, at the hilum) survives it joined to that vessel, and the segmentation
    becomes the vessel tree. Such a nodule is still a body of its own: its inscribed radius has a
    local maximum (reached by climbing from the peak) and falls to a *neck* – the saddle of the
    inscribed radius – on the way to the thicker structure. When the neck is narrower than
    :data:`NECK_RATIO` times the nodule's radius (a lobe joins its body more broadly), the nodule is
    the reconstruction of its own core above the neck, and the region beyond the neck (the thicker
    structure and all that hangs on it) is cut off. The region's size is kept as it was for the leak
    test (:func:`inference.shape.is_vessel_like`): counting only the nodule's side let vessel pieces
    next to thicker vessels pass as nodules (held-out 256² phantoms: 0.38 → 0.62 false positives
    per scan).

    Returns (opened mask, its ball radius), or None when there is no thicker structure in
    ``opened`` or no narrow neck to it.
    """
    top = _ascend(np.where(region, inside, -1.0), peak)
    d_top = float(inside[top])
    if d_top <= 0:
        return None
    thicker = opened & (inside > THICKER * d_top + 0.5 * min(sampling))
    if not thicker.any():
        return None
    return _cut_at_neck(inside, region, top, peak, thicker, rho, NECK_RATIO * d_top, sampling)


def _cut_at_neck(inside: np.ndarray, region: np.ndarray, top: tuple[int, int, int], peak: tuple[int, int, int],
                 other: np.ndarray, lo_t: float, hi_t: float, sampling: tuple[float, float, float]
                 ) -> tuple[np.ndarray, float] | None:
    """The nodule around ``top`` cut off from ``other`` at the neck of the inscribed radius.

    The neck is the highest level in (``lo_t``, ``hi_t``) at which the core around ``top`` (the
    voxels deeper than the level, connected to it) still reaches ``other``, found by bisection
    (connectivity only shrinks as the level rises). The nodule is its core just above the neck,
    dilated back by that level within the region. None when the core is joined to ``other`` even at
    ``hi_t`` (broadly: the "nodule" is part of that structure) or already apart at ``lo_t`` (the
    opening has separated them). Returns (the nodule's mask, the level).
    """
    if hi_t <= lo_t:
        return None

    def joined(level: float) -> bool:
        labels, _ = ndi.label(inside > level)
        lab = labels[top]
        return bool(lab and (labels[other] == lab).any())

    if joined(hi_t) or not joined(lo_t):
        return None
    for _ in range(8):
        mid = 0.5 * (lo_t + hi_t)
        if joined(mid):
            lo_t = mid
        else:
            hi_t = mid
    level = hi_t  # just above the neck: the core around ``top`` is apart from ``other``
    core = _component_at(inside > level, top, sampling)
    body = dilate(core, level, sampling) & region
    body = _component_at(body, peak, sampling, max_dist_mm=level + 2.0)
    if not body.any():
        return None
    return body, level


# "far beyond the nodule": this many times its expected radius (or its own inscribed radius, if
# larger) from its centre; lobes and short spicules end within it, vessels go on
FAR_HINTS = 1.6


def _far_neighbour_split(inside: np.ndarray, region: np.ndarray, opened: np.ndarray,
                         peak: tuple[int, int, int], rho: float, sampling: tuple[float, float, float],
                         far_mm: float) -> tuple[np.ndarray, float] | None:
    """Separate a nodule from a vessel about as thick as itself, where the opening left them joined.

    The opening is sized to the nodule (ball radius ``rho``, about 0.6 of its inscribed radius): a
    6 mm nodule on a 4 mm vessel, or a 9 mm one overlapping an 8 mm vessel, survives it joined to the
    vessel and the mask runs along it (+250 to +990 % on the synthetic contact scenes). Like
    :func:`_thicker_neighbour_split`, but for any structure that reaches ``far_mm`` (or
    :data:`FAR_HINTS` × the nodule's inscribed radius) beyond the nodule's centre – the local maximum
    of the inscribed radius climbed to from the peak: the level at which the nodule's core parts
    from it is found by bisection; when that is below :data:`NECK_RATIO` × the nodule's radius, the
    nodule is its core above that level, dilated back. Spicules and lobes thinner than ``rho`` are
    not affected (the core is already apart from them at ``rho``).

    Used only as a retry for a seeded nodule whose first mask is not compact (see
    :func:`segment_nodule`): in the detector it turned vessel pieces into compact blobs (held-out
    512² phantoms: 0.00 → 0.33 false positives per scan).

    Returns (opened mask, its ball radius), or None.
    """
    top = _ascend(np.where(region, inside, -1.0), peak)
    d_top = float(inside[top])
    if d_top <= 0:
        return None
    far_mm = max(far_mm, FAR_HINTS * d_top)
    zz, yy, xx = np.ogrid[: region.shape[0], : region.shape[1], : region.shape[2]]
    d2 = _sq_dist(zz, yy, xx, top, sampling)
    far = region & (d2 > far_mm ** 2)
    if not (opened & far).any():
        return None
    return _cut_at_neck(inside, region, top, peak, far, rho, NECK_RATIO * d_top, sampling)


def _point_mask(shape, point) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[point] = True
    return m
