"""Radial vessel cut: a nodule seen from its centre is a star-shaped body, vessels are narrow spokes.

The opening of :mod:`inference.segmentation` cuts vessels thinner than ~0.6 of the nodule's inscribed
radius. A small nodule on vessels about as thick as that (a 6 mm nodule on 3–4 mm vessels, a
ground-glass ball crossed by a solid vessel) keeps them: its mask leaks along the vessel tree.

Seen from the nodule's centre, the dense region's extent along each ray, ``r(u)``, is the nodule's
radius in most directions and runs on along a vessel in a few. Whatever its thickness, a vessel
thinner than the nodule fills only a cone of half-angle ≈ asin(ρ_vessel / R_nodule) (30° for a vessel
half as thick as the nodule), while the nodule's own surface is smooth over wider angles. A
morphological opening of ``r(u)`` on the sphere of directions with a cone of half-angle ``α`` keeps
every feature wider than 2α and cuts the spokes down to the surface around them; rays are clipped
to the opened extent plus a tolerance (a voxel: partial volume, a lobulation's bump).

For a ground-glass nodule, solid tissue met on the way out ends a ray (``stop``): a vessel beside
or across it is another tissue, and the shadow it casts on the rays behind it is filled by a closing
on the sphere after the opening.

This is a fallback for masks that leak (the caller decides when; :func:`inference.segmentation.
segment_nodule` uses it for seeded ground-glass nodules only): an elongated nodule's tips and a
lobulated nodule's narrow lobes are trimmed by it, which the opening does not do.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.spatial import cKDTree

# half-angle of the cone on the sphere of directions: spokes narrower than 2× this are vessels.
# 35°: cuts a vessel up to ~0.55 of the nodule's diameter (asin 0.55 ≈ 33°)
CONE_DEG = 35.0


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors (z, y, x) on the Fibonacci sphere, shape (n, 3)."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5 ** 0.5) * k
    return np.stack([np.cos(phi), np.sin(phi) * np.sin(theta), np.sin(phi) * np.cos(theta)], axis=1)


@functools.lru_cache(maxsize=8)
def _directions(n: int) -> tuple[np.ndarray, cKDTree]:
    """:func:`fibonacci_sphere` of ``n`` and a tree to look its directions up."""
    dirs = fibonacci_sphere(n)
    return dirs, cKDTree(dirs)


@functools.lru_cache(maxsize=8)
def _cones(n: int, cone_deg: float) -> list[np.ndarray]:
    """For each of the ``n`` directions, the indices of the directions within ``cone_deg`` of it."""
    dirs, tree = _directions(n)
    chord = 2.0 * np.sin(np.radians(cone_deg) / 2.0)
    return [np.asarray(ix, dtype=np.intp) for ix in tree.query_ball_point(dirs, chord)]


def ray_extent(region: np.ndarray, centre: np.ndarray, sampling: tuple[float, float, float],
               max_mm: float, n_dirs: int, stop: np.ndarray | None = None) -> np.ndarray:
    """Distance (mm) from ``centre`` (fractional z, y, x index) along each direction to where the ray
    first leaves ``region`` (``max_mm`` if it does not within that distance or leaves the array
    inside it). With ``stop``, a ray also ends where it enters ``stop`` after having been outside it
    (another tissue met on the way out, e.g. a vessel beside a ground-glass nodule; a solid core
    around the centre is crossed)."""
    dirs, _ = _directions(n_dirs)
    sp = np.asarray(sampling, dtype=float)
    step = 0.5 * float(sp.min())
    radii = np.arange(0.0, max_mm + step, step)
    pos = np.rint(centre[None, None, :] + dirs[:, None, :] * radii[None, :, None] / sp).astype(np.intp)
    shape = np.asarray(region.shape)
    in_array = np.all((pos >= 0) & (pos < shape), axis=2)
    inside = np.ones(in_array.shape, dtype=bool)  # leaving the array inside the region: not an exit
    p = pos[in_array]
    inside[in_array] = region[p[:, 0], p[:, 1], p[:, 2]]
    exits = ~inside
    if stop is not None:
        hit = np.zeros(in_array.shape, dtype=bool)
        hit[in_array] = stop[p[:, 0], p[:, 1], p[:, 2]]
        exits |= hit & (np.cumsum(~hit, axis=1) > 0)
    first = np.where(exits.any(axis=1), np.argmax(exits, axis=1), len(radii) - 1)
    return radii[first]


def _erode(values: np.ndarray, cones: list[np.ndarray]) -> np.ndarray:
    return np.array([values[c].min() for c in cones])


def _dilate(values: np.ndarray, cones: list[np.ndarray]) -> np.ndarray:
    return np.array([values[c].max() for c in cones])


def spherical_opening(extent: np.ndarray, cone_deg: float = CONE_DEG) -> np.ndarray:
    """Grey opening of a function on the Fibonacci sphere (``extent[i]`` for direction ``i``) with a
    cone of half-angle ``cone_deg``: the largest value reachable by a cone lying wholly under it
    (removes peaks narrower than the cone)."""
    cones = _cones(len(extent), float(cone_deg))
    return _dilate(_erode(extent, cones), cones)


def spherical_closing(extent: np.ndarray, cone_deg: float = CONE_DEG) -> np.ndarray:
    """Grey closing on the Fibonacci sphere: fills valleys narrower than the cone (the shadow of a
    vessel that stopped the rays behind it)."""
    cones = _cones(len(extent), float(cone_deg))
    return _erode(_dilate(extent, cones), cones)


def radial_cut(region: np.ndarray, centre: np.ndarray, sampling: tuple[float, float, float],
               max_mm: float, *, cone_deg: float = CONE_DEG, tolerance_mm: float | None = None,
               stop: np.ndarray | None = None, body_region: np.ndarray | None = None) -> np.ndarray:
    """The part of ``region`` within its star-shaped body around ``centre`` (see the module docstring).

    ``max_mm``: how far rays are followed (beyond the largest radius the nodule may have).
    ``tolerance_mm``: how far a ray may reach beyond the opened extent (default: the coarsest voxel
    side; none with ``stop``).
    ``stop``: another tissue inside ``region`` that ends a ray (:func:`ray_extent`), e.g. solid
    vessels beside or across a ground-glass nodule. The shadows it casts are filled by a closing on
    the sphere after the opening, and the nodule's extent there is the closing's: the mask keeps
    the part of such a vessel that lies within the nodule, as a vessel crossing a nodule is within
    its boundary.
    ``body_region``: with ``stop``, the region whose extents give the body (default ``region``): the
    part of a low-threshold region above the nodule's half-maximum, so that where the rays meet a
    vessel the body ends at the nodule's true surface, as the half-maximum mask does elsewhere.
    Returns a bool mask over ``region``'s grid; empty when ``centre`` is not in ``region``.
    """
    centre = np.asarray(centre, dtype=float)
    ci = tuple(int(v) for v in np.clip(np.rint(centre), 0, np.asarray(region.shape) - 1))
    if not region[ci]:
        return np.zeros(region.shape, dtype=bool)
    sp = np.asarray(sampling, dtype=float)
    # (with stop, beyond the body a ray meets the stop tissue, which is not the nodule's)
    tol = float(tolerance_mm) if tolerance_mm is not None else 0.0 if stop is not None else float(sp.max())
    # enough directions for ~1 mm between neighbouring rays at the nodule's surface
    n_dirs = int(np.clip(4.0 * np.pi * (0.5 * max_mm) ** 2, 200, 1500))
    extent = ray_extent(region, centre, sampling, max_mm, n_dirs)
    if stop is None:
        allowed = np.minimum(extent, spherical_opening(extent, cone_deg) + tol)
    else:
        # spokes first (rays running along a stop tissue that holds the centre, or through gaps
        # between vessels), then the shadows (where a vessel stopped the rays short of the surface)
        body = spherical_closing(spherical_opening(
            ray_extent(region if body_region is None else body_region, centre, sampling, max_mm, n_dirs,
                       stop=stop), cone_deg), cone_deg)
        allowed = np.minimum(extent, body + tol)
    # every voxel of the region is kept when within the allowed extent of its (nearest) direction
    idx = np.argwhere(region)
    off = (idx - centre[None, :]) * sp[None, :]
    dist = np.linalg.norm(off, axis=1)
    dirs_tree = _directions(n_dirs)[1]
    unit = off / np.maximum(dist, 1e-9)[:, None]
    _, nearest = dirs_tree.query(unit)
    keep = dist <= allowed[nearest] + 0.5 * float(sp.min())
    out = np.zeros(region.shape, dtype=bool)
    out[tuple(idx[keep].T)] = True
    out[ci] = True
    return out
