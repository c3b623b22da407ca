"""Rendering a study: anatomy through a rigid transform onto an axial voxel grid, then tubes,
nodules and correlated noise.

Speed is the design constraint (a 300-slice 512² series in a few seconds): the anatomy and the
tubes are compiled per-voxel loops (:mod:`._kernels`); nodules are rendered in their own bounding
boxes. Noise comes from a small bank of correlated noise
slices, each used with a random circular shift and flip, instead of filtering a full 3-D volume.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import numba
import numpy as np
from scipy import ndimage as ndi

from . import _kernels as K
from .anatomy import Anatomy, Tube



@dataclass(frozen=True)
class StudyGrid:
    """Axial voxel grid in LPS plus the rigid pose of the anatomy: ``p = R·u + t``."""

    rows: int
    cols: int
    nz: int
    pixel_mm: float
    slice_mm: float
    origin: tuple[float, float, float]  # LPS of voxel (x=0, y=0, z=0)
    rotation: np.ndarray  # 3×3, anatomy → LPS
    translation: np.ndarray  # (3,)

    def index_to_anatomy_affine(self) -> np.ndarray:
        """3×4 affine: voxel index (x, y, z, 1) → anatomy mm."""
        m = np.zeros((3, 4))
        m[:, :3] = np.diag([self.pixel_mm, self.pixel_mm, self.slice_mm])
        m[:, 3] = self.origin
        rt = self.rotation.T
        out = np.zeros((3, 4))
        out[:, :3] = rt @ m[:, :3]
        out[:, 3] = rt @ (m[:, 3] - self.translation)
        return out

    def anatomy_to_index(self, u: np.ndarray) -> np.ndarray:
        """``(..., 3)`` anatomy mm → fractional (x, y, z) voxel index."""
        p = np.asarray(u, dtype=float) @ self.rotation.T + self.translation
        return (p - np.asarray(self.origin)) / np.array([self.pixel_mm, self.pixel_mm, self.slice_mm])

    def anatomy_to_lps(self, u: np.ndarray) -> np.ndarray:
        return np.asarray(u, dtype=float) @ self.rotation.T + self.translation


@contextlib.contextmanager
def kernel_threads() -> Iterator[int]:
    """Threads for the parallel kernels: all of numba's, but only as many as there are idle CPUs.

    On a shared machine a parallel loop runs at the pace of its slowest, descheduled thread, so
    oversubscribing a busy machine is slower than running on one thread.
    """
    n_max = numba.config.NUMBA_NUM_THREADS
    try:
        idle = (os.cpu_count() or 1) - os.getloadavg()[0]
    except OSError:  # no load average on this platform
        idle = float(n_max)
    n = int(max(1, min(n_max, round(idle))))
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)


def render_anatomy(an: Anatomy, grid: StudyGrid) -> np.ndarray:
    """Anatomy HU ``(nz, rows, cols)`` float32 with partial-volume edges (no tubes, no noise)."""
    out = np.empty((grid.nz, grid.rows, grid.cols), dtype=np.float32)
    A = np.ascontiguousarray(grid.index_to_anatomy_affine(), dtype=np.float64)
    # samples across the slice: 1 for thin slices, up to 3 for slices much thicker than a pixel
    z_sub = int(min(3, max(1, round(grid.slice_mm / (1.25 * grid.pixel_mm)))))
    with kernel_threads():
        K.render_anatomy_kernel(an.p, an.tex, an.tex_origin, 1.0 / an.tex_step, A, out, grid.pixel_mm, z_sub)
    return out


def render_tubes(hu: np.ndarray, tubes: list[Tube], grid: StudyGrid) -> None:
    """Paint tapered segments into ``hu`` in place (in list order), one-pixel PV ramp."""
    if not tubes:
        return
    a = grid.anatomy_to_lps(np.array([t.p0 for t in tubes]))
    b = grid.anatomy_to_lps(np.array([t.p1 for t in tubes]))
    seg = np.concatenate([a, b, np.array([[t.r0, t.r1] for t in tubes])], axis=1)
    vals = np.array([t.hu for t in tubes], dtype=np.float64)
    modes = np.array([0 if t.mode == "max" else 1 for t in tubes], dtype=np.int64)
    sp = np.array([grid.pixel_mm, grid.pixel_mm, grid.slice_mm])
    K.paint_tubes_kernel(hu, np.ascontiguousarray(seg), vals, modes, np.asarray(grid.origin, dtype=np.float64), sp, grid.pixel_mm)


def noise_bank(rng: np.random.Generator, ny: int, nx: int, sigma_hu: float, corr_px: float, n: int = 16) -> np.ndarray:
    """``n`` slices of spatially correlated Gaussian noise with standard deviation ``sigma_hu``."""
    white = rng.standard_normal((n, ny, nx), dtype=np.float32)
    bank = ndi.gaussian_filter(white, (0, corr_px, corr_px), mode="wrap")
    bank *= np.float32(sigma_hu) / bank.std()
    return bank


def noise_and_quantise(hu: np.ndarray, rng: np.random.Generator, sigma_hu: float, corr_px: float) -> np.ndarray:
    """HU int16: ``hu`` plus correlated noise (a bank slice per slice, shifted and flipped at random)."""
    nz, ny, nx = hu.shape
    out = np.empty(hu.shape, dtype=np.int16)
    if sigma_hu > 0:
        bank = noise_bank(rng, ny, nx, sigma_hu, corr_px)
    else:
        bank = np.zeros((1, ny, nx), dtype=np.float32)
    picks = rng.integers(0, bank.shape[0], nz).astype(np.int64)
    shifts = rng.integers(0, max(ny, nx), (nz, 2)).astype(np.int64)
    flips = rng.integers(0, 4, nz).astype(np.int64)
    with kernel_threads():
        K.add_noise_quantise(hu, bank, picks, shifts, flips, out)
    return out
