"""Candidate stage of the automatic detector: compact dense blobs inside the lungs.

Multiscale blob finding on a ~1.5 mm copy of the lungs (inscribed radius of the dense regions, a
shell test against tubes) and the Hessian sphericity of each candidate at its own scale; see
:func:`blob_candidates`. The verification stage (segmentation and shape rules) is in
:mod:`inference.detection`.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
from scipy.spatial import cKDTree

from .lung import LungMask
from .morphology import edt as distance_map
from .radial import fibonacci_sphere
from .registration import block_mean, factors_for
from .seeds import Seed
from .types import CTVolume


_SPHERE = fibonacci_sphere(96)


def hessian_blobness(img: np.ndarray, point: np.ndarray, radius_mm: float,
                     spacing: np.ndarray, set_aside_above: float | None = None) -> tuple[float, np.ndarray]:
    """Sphericity of the bright structure near ``point`` from the Hessian of ``img`` at scale ``r/√3``.

    A ball of radius r gives the strongest scale-normalised response at σ = r/√3 with three equal
    negative eigenvalues; a tube has one eigenvalue ≈ 0 along its axis, a plate (wall, fissure) two.
    The Hessian is read at the brightest point of the σ-smoothed image within ``r`` of ``point`` (the
    deepest point of a thresholded region is off-centre when a vessel crosses a faint nodule).
    ``set_aside_above``: voxels denser than this (and one voxel around them, their blurred edge) are
    read as parenchyma – the shape of a ground-glass blob without the vessels it touches.
    Returns (|λ|min / |λ|max when all three are negative, else 0; that point's index).
    """
    sigma = max(radius_mm / np.sqrt(3.0), 0.8 * float(spacing.min()))
    half = np.ceil((3.0 * sigma + radius_mm) / spacing).astype(int) + 1
    p = np.asarray(point, int)
    lo = np.maximum(p - half, 0)
    hi = np.minimum(p + half + 1, np.asarray(img.shape))
    crop = img[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float64)
    if set_aside_above is not None:
        denser = crop > set_aside_above
        if denser.any():
            crop[ndi.binary_dilation(denser)] = 0.0
    s_vox = sigma / spacing
    c0 = p - lo
    # Only the ball of radius r around the point (plus one voxel for the differences) is read from
    # the smoothed crop: the separable Gaussian (axis 0, 1, 2 in turn, as ndi.gaussian_filter does)
    # is computed on the full crop along each axis but kept only over that box before the next
    # axis, which gives the same values there at about half the cost.
    rv = np.floor(radius_mm / spacing).astype(int) + 2
    blo = np.maximum(c0 - rv, 0)
    bhi = np.minimum(c0 + rv + 1, np.asarray(crop.shape))
    smooth = crop
    for ax in range(3):
        smooth = ndi.gaussian_filter1d(smooth, s_vox[ax], axis=ax, mode="nearest")
        sl = [slice(None)] * 3
        sl[ax] = slice(blo[ax], bhi[ax])
        smooth = smooth[tuple(sl)]
    box = smooth.shape
    zz, yy, xx = np.ogrid[blo[0]: bhi[0], blo[1]: bhi[1], blo[2]: bhi[2]]
    d2 = (((zz - c0[0]) * spacing[0]) ** 2 + ((yy - c0[1]) * spacing[1]) ** 2 + ((xx - c0[2]) * spacing[2]) ** 2)
    cb = np.unravel_index(int(np.argmax(np.where(d2 <= radius_mm ** 2, smooth, -np.inf))), box)
    c = np.asarray(cb) + blo
    # second derivatives of the σ-smoothed image by central differences at that point (σ spans
    # several voxels, so differences are as good as Gaussian-derivative kernels and 6× cheaper)
    h = np.zeros((3, 3))
    ci = np.clip(np.asarray(c), 1, np.asarray(crop.shape) - 2) - blo
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


# "denser tissue" for a ground-glass candidate: this many times its own density above the parenchyma
# (ground glass is ~250–450 HU above it, a vessel or solid part ~900)
DENSER_TISSUE = 2.0


def priority(seed: Seed) -> float:
    """Order of verification: large clean blobs first, but a tube (vessel) ranks far below a small
    sphere of the same inscribed radius."""
    return seed.score * (0.25 + seed.blobness)


def blob_candidates(vol: CTVolume, lung: LungMask, *, target_mm: float = 1.5,
                    min_radius_mm: float = 1.8, max_shell_fraction: float = 0.12,
                    budget: int | None = None, blobness: bool = True) -> list[Seed]:
    """Compact dense blobs inside the lungs (see module docstring).

    1. ``dense`` = voxels of the lung envelope denser than the faintest ground glass worth reporting:
       ``P + max(12 % of (tissue − P), 4 σ)`` on a ~1.5 mm copy smoothed by ~1 mm.
    2. Inscribed radius = Euclidean distance to the nearest non-dense voxel; its local maxima of at
       least ``min_radius_mm`` (a 4 mm nodule has ~2 mm) are blob centres or vessel centre lines.
    3. Shell test: on a sphere of 1.6× the inscribed radius around the centre, a tube occupies two
       caps (≈ 2/(4·1.6²) ≈ 20 % of the shell, more at a bifurcation), a nodule only where vessels
       attach. Candidates whose shell is more than ``max_shell_fraction`` dense are vessels.
       A candidate whose own density is subsolid is also read as ground glass: structures more
       than :data:`DENSER_TISSUE` × denser (vessels) are set aside in the shell and the Hessian, and
       it passes on that reading (``Seed.glass_reading``, confirmed or overruled at verification).
    4. Hessian sphericity (:func:`hessian_blobness`) of each, strongest first. With ``budget`` the
       result holds at least the ``budget`` highest-:func:`priority` candidates (and is cut where no
       further one could rank among them); without, every candidate.

    ``blobness=False`` stops after step 3: every candidate that passes the shell test, without the
    Hessian (``Seed.blobness`` is NaN) – for diagnostics that ask only where the blobs are.
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
    kept: list[int] = []
    for i in range(len(pts)):
        if suppressed[i]:
            continue
        kept.append(i)
        for j in tree.query_ball_point(pmm[i], float(radii[i])):
            if j > i:
                suppressed[j] = True
    # the tests below, for all kept maxima at once (same arithmetic as one by one, in float64)
    idx = np.asarray(kept, dtype=np.intp)
    idx = idx[excess[tuple(pts[idx].T)].astype(np.float64) >= thr]
    kp, kr = pts[idx], radii[idx].astype(np.float64)
    # Ground-glass reading: a candidate whose own density above the parenchyma (median within half
    # its inscribed radius) is under 1/DENSER_TISSUE of soft tissue's is read a second time with
    # structures more than DENSER_TISSUE × denser than itself set aside. A vessel crossing or
    # touching ground glass is another tissue, not a continuation of the blob: it otherwise fills
    # the shell (a "tube") and dominates the Hessian (a faint ball beside a bright tube is read as
    # the tube).
    levels = np.full(len(idx), np.inf)
    if len(idx):
        inner = np.rint(kp[:, None, :] + _SPHERE[None, :, :] * (0.5 * kr)[:, None, None] / spacing).astype(int)
        inner = np.clip(inner, 0, shape - 1)
        levels = np.median(excess[tuple(inner.reshape(-1, 3).T)].reshape(len(idx), -1), axis=1)
    set_aside = np.where(DENSER_TISSUE * levels < stats.tissue_hu - P, DENSER_TISSUE * levels, np.inf)
    fracs = np.empty((len(idx), 3))
    fracs_glass = np.empty((len(idx), 3))
    inside_lung = np.ones(len(idx))
    for n, k in enumerate((1.6, 2.0, 2.5)):
        rr = k * kr + 0.5 * float(spacing.min())
        sample = np.rint(kp[:, None, :] + _SPHERE[None, :, :] * rr[:, None, None] / spacing).astype(int)
        ok = np.all((sample >= 0) & (sample < shape), axis=2)
        vals = np.zeros(ok.shape, dtype=bool)
        inl = np.zeros(ok.shape, dtype=bool)
        vals[ok] = dense[tuple(sample[ok].T)]
        inl[ok] = env[tuple(sample[ok].T)]
        n_in = inl.sum(axis=1)
        in_frac = n_in / inl.shape[1]
        inside_lung = np.minimum(inside_lung, in_frac)
        # a nodule is surrounded by lung, at least on one side (juxtapleural: about half);
        # shell points in the wall/mediastinum are neither evidence for nor against a tube
        fracs[:, n] = np.where(in_frac < 0.35, 1.0, (vals & inl).sum(axis=1) / np.maximum(n_in, 1))
        # the ground-glass reading: denser shell points count neither way either (a quarter of the
        # shell must be left to judge by)
        denser = np.zeros(ok.shape, dtype=bool)
        denser[ok] = excess[tuple(sample[ok].T)] > np.broadcast_to(set_aside[:, None], ok.shape)[ok]
        judged = inl & ~denser
        n_judged = judged.sum(axis=1)
        fracs_glass[:, n] = np.where((in_frac >= 0.35) & (n_judged >= 0.25 * inl.shape[1]),
                                     (vals & judged).sum(axis=1) / np.maximum(n_judged, 1), fracs[:, n])
    shell_all = fracs.min(axis=1) if len(idx) else np.zeros(0)
    shell_glass = fracs_glass.min(axis=1) if len(idx) else np.zeros(0)
    for p, r, shell, g_shell, lung_frac, above in zip(kp, kr, shell_all, shell_glass, inside_lung, set_aside):
        shell, g_shell, lung_frac = float(shell), float(g_shell), float(lung_frac)
        # large vessels are few and the shape test rejects them; large perivascular nodules have
        # several vessels in their shell: allow more there
        limit = max_shell_fraction if r < 4.0 else 2.0 * max_shell_fraction
        # at the wall the in-lung part of the shell runs along the pleura, whose partial-volume rim
        # is dense: a juxtapleural nodule's shell is busier than an intrapulmonary one's
        if lung_frac < 0.9:
            limit *= 2.0
        # the ground-glass reading, not at the wall: there the tissue set aside would be the pleura's
        # partial-volume rim, and what it leaves a scrap of it (its shell is ≤ the plain one: only
        # dense points are set aside)
        glass_reading = bool(np.isfinite(above)) and lung_frac >= 0.9
        read_shell = g_shell if glass_reading else shell
        if read_shell > limit:
            continue
        c = p * f + lo_full + (np.asarray(f) - 1) / 2.0
        cmm = g.index_to_lps(c)
        # strength: clean shell × size — noise blobs are small, vessel pieces have busy shells
        seeds.append(Seed(tuple(float(v) for v in cmm), "detector", radius_mm=float(r) * 1.2,
                          score=(1.0 - read_shell) * float(r), blobness=float("nan"), lung_fraction=lung_frac,
                          glass_reading=glass_reading, plain_shell_ok=shell <= limit, shell_fraction=read_shell))
        grid_points.append((p, float(r), float(above) if glass_reading else None))
    if not blobness:
        return seeds
    # strongest first; the Hessian (the costly part) is evaluated in that order, and with a budget
    # only until no later candidate can enter the budget's priority ranking (priority ≤ 1.25 × score)
    order = sorted(range(len(seeds)), key=lambda i: -seeds[i].score)
    out: list[Seed] = []
    best: list[float] = []  # priorities of evaluated seeds, descending
    for i in order:
        s = seeds[i]
        if budget is not None and len(best) >= budget and best[budget - 1] >= 1.25 * s.score:
            break
        p, r, above = grid_points[i]
        # the Hessian scale follows the blob's size; the inscribed radius of a dense region
        # underestimates a lobulated or spiculated nodule's, so a few scales are tried
        s.blobness = max(hessian_blobness(bounded, p, k * r, spacing)[0] for k in (0.8, 1.0, 1.4))
        s.plain_blobness = s.blobness
        if above is not None:
            s.blobness = max(hessian_blobness(bounded, p, k * r, spacing, above)[0] for k in (0.8, 1.0, 1.4))
        out.append(s)
        best.append(priority(s))
        best.sort(reverse=True)
    return out
