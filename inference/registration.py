"""Rigid registration of the prior CT to the current CT (SimpleITK), plus local refinement.

Each study has its own Frame of Reference and the patient lies a little differently, so prior
coordinates must be mapped into the current study before nodules can be matched. A global rigid
(Euler3D) multi-resolution registration with Mattes mutual information aligns the chest; breathing
and posture make the residual error position-dependent, so around each nodule a translation is
refined on a local crop (normalised correlation, same modality): an exhaustive search within 20 mm on
a ~2 mm grid, then gradient descent from the best shift.

Transforms are kept as 4×4 affine matrices in LPS millimetres (``current → prior``, the ITK
"fixed → moving" direction) and its inverse, so results are plain numpy and can be stored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .types import CTVolume, VolumeGeometry

log = logging.getLogger("noduletrack.inference.registration")


class RegistrationError(RuntimeError):
    """Registration failed or converged to an implausible transform."""


@dataclass(frozen=True)
class RigidTransform:
    """``current_to_prior`` maps current-study LPS points to prior-study LPS points (4×4 affine)."""

    current_to_prior: np.ndarray
    metric: float = float("nan")

    @property
    def prior_to_current_matrix(self) -> np.ndarray:
        return np.linalg.inv(self.current_to_prior)

    def to_prior(self, points_mm: np.ndarray) -> np.ndarray:
        return _apply(self.current_to_prior, points_mm)

    def to_current(self, points_mm: np.ndarray) -> np.ndarray:
        return _apply(self.prior_to_current_matrix, points_mm)

    @property
    def rotation_deg(self) -> float:
        r = self.current_to_prior[:3, :3]
        return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))

    @property
    def translation_mm(self) -> np.ndarray:
        return self.current_to_prior[:3, 3].copy()

    @staticmethod
    def identity() -> "RigidTransform":
        return RigidTransform(np.eye(4))


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=float)
    return pts @ m[:3, :3].T + m[:3, 3]


def _affine_of(tx: sitk.Transform) -> np.ndarray:
    """4×4 matrix of a SimpleITK Euler3D/Translation/Affine transform."""
    dim = 3
    if tx.GetName() == "TranslationTransform":
        m = np.eye(4)
        m[:3, 3] = tx.GetOffset()
        return m
    t = sitk.AffineTransform(dim)
    a = np.asarray(tx.GetMatrix(), dtype=float).reshape(3, 3)
    c = np.asarray(tx.GetCenter(), dtype=float)
    tr = np.asarray(tx.GetTranslation(), dtype=float)
    del t
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = c + tr - a @ c
    return m


def to_sitk(array: np.ndarray, geometry: VolumeGeometry, spacing_factor: tuple[int, int, int] = (1, 1, 1)) -> sitk.Image:
    """Wrap a ``(z, y, x)`` array as a SimpleITK image with the volume's physical geometry.

    ``spacing_factor`` (z, y, x) is the block-averaging factor already applied to ``array``; the
    origin moves to the centre of the first block.
    """
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    fz, fy, fx = spacing_factor
    sx, sy, sz = geometry.spacing
    img.SetSpacing((sx * fx, sy * fy, sz * fz))
    d = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    shift = d @ (np.array([(fx - 1) * sx, (fy - 1) * sy, (fz - 1) * sz]) / 2.0)
    img.SetOrigin(tuple(np.asarray(geometry.origin) + shift))
    img.SetDirection(tuple(geometry.direction))
    return img


def block_mean(hu: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Average ``factors`` (z, y, x) blocks into one voxel (float32); trailing partial blocks dropped.

    Integer input (HU as int16): each slice's in-plane block sums are exact in int32 (summed over
    strided views: first the ``fx`` columns, then the ``fy`` rows, a slab of slices at a time so
    that the partial sums stay in cache; several times faster than reshaped float reductions on
    512² × 300 inputs), then divided and accumulated over z in float32 exactly as the generic path
    does (bit-identical result: the float32 sums there are exact integers too, up to 512 voxels per
    in-plane block).
    """
    fz, fy, fx = factors
    nz, ny, nx = (s // f for s, f in zip(hu.shape, factors))
    if (fz, fy, fx) == (1, 1, 1):
        return hu[:nz, :ny, :nx].astype(np.float32)
    if hu.dtype.kind in "iub" and hu.dtype.itemsize <= 2 and fy * fx <= 512:
        out = np.empty((nz, ny, nx), dtype=np.float32)
        slab = 16
        cols = np.empty((slab, ny * fy, nx), dtype=np.int32)
        sums = np.empty((slab, ny, nx), dtype=np.int32)
        part = np.empty((slab, ny, nx), dtype=np.float32)
        for z0 in range(0, nz, slab):
            z1 = min(nz, z0 + slab)
            n = z1 - z0
            o = out[z0:z1]
            for k in range(fz):
                src = hu[z0 * fz + k: z1 * fz: fz, : ny * fy, : nx * fx]
                c = cols[:n]
                np.copyto(c, src[:, :, 0::fx], casting="unsafe")
                for i in range(1, fx):
                    c += src[:, :, i::fx]
                b = sums[:n]
                np.copyto(b, c[:, 0::fy, :])
                for j in range(1, fy):
                    b += c[:, j::fy, :]
                p = part[:n]
                np.copyto(p, b, casting="unsafe")
                p /= fy * fx
                if k == 0:
                    o[...] = p  # (= 0 + p: no -0.0 from an integer sum)
                else:
                    o += p
        return out / fz
    out = np.zeros((nz, ny, nx), dtype=np.float32)
    for k in range(fz):  # accumulate slice by slice to bound memory on 512² × 300 inputs
        part = hu[k : nz * fz : fz, : ny * fy, : nx * fx].astype(np.float32)
        out += part.reshape(nz, ny, fy, nx, fx).mean(axis=(2, 4))
    return out / fz


def factors_for(geometry: VolumeGeometry, target_mm: float) -> tuple[int, int, int]:
    sx, sy, sz = geometry.spacing
    return (max(1, int(round(target_mm / sz))), max(1, int(round(target_mm / sy))), max(1, int(round(target_mm / sx))))


def _prepared(vol: CTVolume, target_mm: float) -> sitk.Image:
    f = factors_for(vol.geometry, target_mm)
    arr = block_mean(vol.hu, f)
    # bone and contrast are not what should drive alignment of lungs; air outside the body is
    np.clip(arr, -1000.0, 300.0, out=arr)
    return to_sitk(arr, vol.geometry, f)


def register_rigid(prior: CTVolume, current: CTVolume, *, coarse_mm: float = 4.0, seed: int = 7) -> RigidTransform:
    """Global rigid registration prior → current (the transform maps current points into the prior).

    Multi-resolution (shrink 2, 1 on a ~4 mm copy: lungs and chest wall are large structures), Mattes
    MI with 50 bins on a fixed 15 % random sample, regular-step gradient descent. Initialised by
    aligning the centres of mass of the body.
    """
    t0 = time.perf_counter()
    fixed = _prepared(current, coarse_mm)
    moving = _prepared(prior, coarse_mm)
    # body = HU above halfway between air and soft tissue; centre of mass via moments
    init = sitk.CenteredTransformInitializer(
        sitk.Cast(fixed > -500, sitk.sitkFloat32), sitk.Cast(moving > -500, sitk.sitkFloat32),
        sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.15, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-2, numberOfIterations=120, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([4.0, 1.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    try:
        final = reg.Execute(fixed, moving)
    except RuntimeError as exc:
        raise RegistrationError(f"rigid registration failed: {exc}") from exc
    if final.GetName() == "CompositeTransform":
        final = sitk.CompositeTransform(final).GetNthTransform(0)
    m = _affine_of(final)
    result = RigidTransform(m, float(reg.GetMetricValue()))
    log.debug("rigid registration", extra={"fields": {"seconds": round(time.perf_counter() - t0, 2),
                                                       "metric": result.metric,
                                                       "rotation_deg": round(result.rotation_deg, 2),
                                                       "translation_mm": np.round(result.translation_mm, 1).tolist()}})
    return result


def _crop(vol: CTVolume, center_mm: np.ndarray, radius_mm: float) -> sitk.Image | None:
    g = vol.geometry
    c = g.lps_to_index(center_mm)
    half = np.array([radius_mm / g.spacing[2], radius_mm / g.spacing[1], radius_mm / g.spacing[0]])
    lo = np.maximum(np.floor(c - half).astype(int), 0)
    hi = np.minimum(np.ceil(c + half).astype(int) + 1, np.asarray(g.shape))
    if np.any(hi - lo < 4):
        return None
    arr = vol.hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32)
    np.clip(arr, -1000.0, 300.0, out=arr)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(g.spacing)
    img.SetDirection(g.direction)
    img.SetOrigin(tuple(g.index_to_lps(lo.astype(float))))
    return img


# grid of the exhaustive translation search in refine_local (mm): lung structures that constrain a
# local shift (vessels, fissures, the wall) are a few mm across, and a ~2 mm grid keeps the search cheap
_SEARCH_GRID_MM = 2.0
# extra extent of the moving crop around the fixed one for the gradient descent (its capture range)
_DESCENT_MARGIN_MM = 10.0


def _resampled(img: sitk.Image, center_mm: np.ndarray, half_mm: float, spacing_mm: float, direction: np.ndarray,
               transform: sitk.Transform | None = None) -> np.ndarray:
    """``img`` sampled on a cube of ``±half_mm`` around ``center_mm`` (axes ``direction``), as (z, y, x).

    With ``transform`` (output point → ``img`` point) the cube is defined in the output space and
    mapped into ``img``; outside ``img`` the value is air (-1000).
    """
    n = 2 * int(np.ceil(half_mm / spacing_mm)) + 1
    half = (n - 1) / 2 * spacing_mm
    ref = sitk.Image([n, n, n], sitk.sitkFloat32)
    ref.SetSpacing((spacing_mm,) * 3)
    ref.SetDirection(tuple(direction.ravel()))
    ref.SetOrigin(tuple(np.asarray(center_mm, float) - direction @ np.full(3, half)))
    tx = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    out = sitk.Resample(img, ref, tx, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def ncc_search(fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Exhaustive normalised cross-correlation of ``fixed`` over every position inside ``moving``.

    ``moving`` is larger than ``fixed`` by ``2k`` voxels along each axis; returns the offset of the
    best match relative to the centred position (voxels, same axis order), its correlation, and the
    correlation at the centred position (zero offset). FFT-based (``scipy.signal.fftconvolve``).
    """
    from scipy.signal import fftconvolve

    f = fixed.astype(np.float64) - float(fixed.mean())
    m = moving.astype(np.float64)
    nf = f.size
    ff = float(np.sum(f * f))
    num = fftconvolve(m, f[::-1, ::-1, ::-1], mode="valid")
    ones = np.ones(fixed.shape)
    s1 = fftconvolve(m, ones, mode="valid")
    s2 = fftconvolve(m * m, ones, mode="valid")
    var = np.maximum(s2 - s1 * s1 / nf, 0.0)
    ncc = np.where(var * ff > 1e-9, num / np.sqrt(np.maximum(var * ff, 1e-9)), 0.0)
    centre = (np.asarray(ncc.shape) - 1) // 2
    best = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return np.asarray(best) - centre, float(ncc[best]), float(ncc[tuple(centre)])


def refine_local(prior: CTVolume, current: CTVolume, glob: RigidTransform, center_current_mm: np.ndarray,
                 *, radius_mm: float = 25.0, max_shift_mm: float = 20.0) -> RigidTransform:
    """Translation refinement of ``glob`` on a crop around ``center_current_mm``.

    Only a translation is estimated (a small crop does not constrain rotation well). Breathing and
    posture leave local residuals of the global rigid transform that can exceed a gradient-descent
    optimiser's capture range (~half the structures' size), so the shift is first found by an
    exhaustive normalised cross-correlation search within ``max_shift_mm`` on a ~2 mm grid, then
    refined (correlation metric, gradient descent) from there. A result that moves more than
    ``max_shift_mm`` from the global transform, or does not fit the crop clearly better than the
    global transform, is distrusted and ``glob`` returned.
    """
    center = np.asarray(center_current_mm, float)
    fixed = _crop(current, center, radius_mm)
    # the gradient descent's moving crop: the fixed one's extent plus its own capture margin
    moving = _crop(prior, glob.to_prior(center), radius_mm + _DESCENT_MARGIN_MM)
    search = _crop(prior, glob.to_prior(center), radius_mm + max_shift_mm + 2 * _SEARCH_GRID_MM)
    if fixed is None or moving is None or search is None:
        return glob
    g_aff = sitk.AffineTransform(3)
    g_aff.SetMatrix(tuple(glob.current_to_prior[:3, :3].ravel()))
    g_aff.SetTranslation(tuple(glob.current_to_prior[:3, 3]))
    # coarse exhaustive search: the prior resampled through glob onto a cube of the current's axes
    direction = np.asarray(current.geometry.direction, float).reshape(3, 3)
    grid = max(_SEARCH_GRID_MM, float(min(current.geometry.spacing)))
    k = int(np.ceil(max_shift_mm / grid))
    f_arr = _resampled(fixed, center, radius_mm, grid, direction)
    m_arr = _resampled(search, center, radius_mm + k * grid, grid, direction, g_aff)
    start = np.zeros(3)
    if f_arr.std() > 1.0 and m_arr.std() > 1.0:
        off_zyx, best, at_zero = ncc_search(f_arr, m_arr)
        if best > at_zero:
            # array axes (z, y, x) are the cube's third, second, first direction columns
            start = direction @ (off_zyx[::-1].astype(float) * grid)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=0.01, numberOfIterations=60,
                                                 relaxationFactor=0.5)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.5, 0.5])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetMovingInitialTransform(g_aff)
    init = sitk.TranslationTransform(3)
    reg.SetInitialTransform(init, inPlace=False)
    try:
        before = reg.MetricEvaluate(fixed, moving)
        if np.any(start):
            # descend from the search's shift, on a crop of the same size around where it points
            shifted = _crop(prior, glob.to_prior(center + start), radius_mm + _DESCENT_MARGIN_MM)
            if shifted is not None:
                moving = shifted
                init.SetOffset(tuple(start))
                reg.SetInitialTransform(init, inPlace=False)
        t = reg.Execute(fixed, moving)
    except RuntimeError:
        return glob
    after = float(reg.GetMetricValue())
    # a crop without structure (homogeneous lung) does not constrain the shift: keep the global
    # transform unless the local fit is clearly better (correlation metric: more negative = better)
    if not after < before - 0.02 * abs(before):
        return glob
    if t.GetName() == "CompositeTransform":
        t = sitk.CompositeTransform(t).GetNthTransform(0)
    shift = np.asarray(t.GetOffset(), float)
    if not np.all(np.isfinite(shift)) or np.linalg.norm(shift) > max_shift_mm:
        return glob
    local = np.eye(4)
    local[:3, 3] = shift
    # moving point = glob(local(x))
    return RigidTransform(glob.current_to_prior @ local, after)
