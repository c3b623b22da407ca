"""Lung mask and image-level density references, estimated from the image itself.

Everything downstream compares a voxel with *this patient's* lung parenchyma and soft tissue rather
than with fixed HU numbers: scanners, kernels, dose and inspiration change absolute values, but the
ordering air < parenchyma < ground glass < soft tissue holds. The mask is computed on a ~2 mm copy
(fast, and enough for a region of interest) and closed with a large ball so that nodules touching the
chest wall or the mediastinum lie *inside* the lung envelope, while the wall itself stays outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from .morphology import block_any, edt, fill_holes, repeat_into
from .registration import block_mean, factors_for
from .types import CTVolume


@dataclass
class ImageStats:
    """Density references of one scan (HU)."""

    air_threshold: float  # between air/lung and soft tissue (Otsu on the body histogram)
    parenchyma_hu: float  # median of the aerated lung
    tissue_hu: float  # mode of non-lung soft tissue (muscle/organs), ≈ the density of a solid nodule
    noise_hu: float  # robust SD of the aerated lung at full resolution (noise + texture)

    @property
    def solid_threshold(self) -> float:
        """Halfway between parenchyma and soft tissue: above it a voxel is "solid" rather than ground glass."""
        return 0.5 * (self.parenchyma_hu + self.tissue_hu)


@dataclass
class LungMask:
    """Lung envelope on the full grid plus the coarse grid it was made on."""

    filled: np.ndarray  # bool (z, y, x), full grid: lungs incl. vessels/nodules, chest wall excluded
    coarse_filled: np.ndarray  # bool, coarse grid
    coarse_air: np.ndarray  # bool, coarse grid: aerated lung only
    factors: tuple[int, int, int]  # coarse block size (z, y, x)
    stats: ImageStats

    @property
    def volume_ml(self) -> float:
        return float(self.filled.sum())


def otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centers = 0.5 * (edges[1:] + edges[:-1])
    w = hist.astype(float)
    w0 = np.cumsum(w)
    w1 = w0[-1] - w0
    m0 = np.cumsum(w * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


# widest in-plane section of a structure inside the lung that the envelope takes in: a 40 mm mass
# (shape.MAX_DIAMETER_MM) or a hilar vessel cut across, with room to spare
PLANAR_HOLE_MAX_MM = 50.0


def _closing_edt(mask: np.ndarray, radius_mm: float, sampling: tuple[float, float, float]) -> np.ndarray:
    """Binary closing with a ball of ``radius_mm`` via two Euclidean distance transforms (any spacing)."""
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in sampling]
    m = np.pad(mask, [(p, p) for p in pad])
    dilated = edt(~m, sampling) <= radius_mm
    closed = edt(dilated, sampling) > radius_mm
    return closed[pad[0]:-pad[0], pad[1]:-pad[1], pad[2]:-pad[2]] | mask


def compute_lung_mask(vol: CTVolume, *, coarse_mm: float = 2.5, closing_mm: float = 12.0) -> LungMask:
    """Segment the lungs: aerated, enclosed, large low-density regions; then close and fill.

    Raises ValueError when no lung-sized air region exists (e.g. not a chest CT).
    """
    f = factors_for(vol.geometry, coarse_mm)
    coarse = block_mean(vol.hu, f)
    sx, sy, sz = vol.geometry.spacing
    sampling = (sz * f[0], sy * f[1], sx * f[2])
    voxel_ml = float(np.prod(sampling)) / 1000.0
    t_air = otsu(np.clip(coarse[::2, ::2, ::2], -1024, 300))
    low = coarse < t_air
    # air outside the body touches the in-plane border (the trachea leaves at the top: z border is fine)
    labels, n = ndi.label(low)
    border = np.unique(np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                                       labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
    sizes = ndi.sum_labels(np.ones_like(labels, dtype=np.int32), labels, index=np.arange(n + 1)) * voxel_ml
    sizes[border] = 0
    sizes[0] = 0
    if sizes.max(initial=0) < 100:  # < 100 mL of enclosed air: no lungs in this scan
        raise ValueError("no lung region found (no enclosed air region of lung size): is this a chest CT?")
    keep = (sizes >= max(50.0, 0.05 * sizes.max()))
    air = keep[labels]
    del labels
    # fill vessels and nodules (holes per slice and in 3-D), then close to take in juxtapleural ones.
    # In a slice through the lung base the diaphragm dome (liver, spleen) is an island of soft tissue
    # ringed by lung: a hole of that slice, but an organ, not a vessel or a nodule. Holes of a slice
    # larger than a disc of PLANAR_HOLE_MAX_MM across are left out (hilar vessels cut across reach
    # ~35 mm, the dome's sections far more)
    max_hole = int(np.pi * (PLANAR_HOLE_MAX_MM / 2.0) ** 2 / (sampling[1] * sampling[2]))
    filled = fill_holes(fill_holes(air), planar=True, max_hole_voxels=max_hole)
    # the closing only needs to be approximate (segmentation refines it locally): do it on a 2× coarser
    # grid, where the two distance transforms are 8× cheaper
    half = block_any(filled, (2, 2, 2))
    closed = _closing_edt(half, closing_mm, tuple(2 * s for s in sampling))
    filled |= repeat_into(closed, (2, 2, 2), filled.shape)
    filled = fill_holes(filled)
    full = repeat_into(filled, f, vol.hu.shape)
    # density references
    parenchyma = float(np.median(coarse[air]))
    body = (coarse >= t_air) & ~filled
    vals = coarse[body]
    # fat (≈ −100 HU) is excluded: a solid nodule has the density of water-like soft tissue, which
    # physically lies above −50 HU (muscle, organs, blood); bone and contrast are above ~150
    vals = vals[(vals > -50.0) & (vals < 150.0)]
    if vals.size > 100:
        hist, edges = np.histogram(vals, bins=np.arange(-50.0, 150.0, 5.0))
        hist = ndi.gaussian_filter1d(hist.astype(float), 1.5)
        tissue = float(edges[int(np.argmax(hist))] + 2.5)
    else:
        tissue = 40.0  # no soft tissue in view: water-equivalent soft tissue
    # full-resolution noise of the aerated lung (texture + quantum noise), from a slab in the middle
    zc = vol.hu.shape[0] // 2
    slab = vol.hu[zc: zc + max(1, f[0])].astype(np.float32)
    slab_mask = full[zc: zc + max(1, f[0])] & (slab < t_air)
    sv = slab[slab_mask]
    noise = float(1.4826 * np.median(np.abs(sv - np.median(sv)))) if sv.size > 100 else 30.0
    stats = ImageStats(air_threshold=t_air, parenchyma_hu=parenchyma, tissue_hu=tissue, noise_hu=noise)
    return LungMask(filled=full, coarse_filled=filled, coarse_air=air, factors=f, stats=stats)
