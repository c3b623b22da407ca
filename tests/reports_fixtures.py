"""Test inputs for the DICOM writers, derived from phantom label maps.

The writers consume :class:`inference.types.TrackedNodule` values. These helpers derive them from a
phantom patient's ground-truth label maps (measurements computed from the voxelised masks, the
prior matched by label, a forecast extrapolated from the two time points with a dilated mask as the
predicted extent). That is legitimate test data with real geometry and real DICOM headers; it is
not the project's measurement or growth code, which have their own tests.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from inference.types import CTVolume, Forecast, NoduleMeasurement, TrackedNodule
from reports.uids import derived_uid


def _feret(points_mm: np.ndarray) -> tuple[float, int, int]:
    """Longest distance between 2-D points (mm) and the indices of its end points."""
    if len(points_mm) == 1:
        return 0.0, 0, 0
    d = np.linalg.norm(points_mm[:, None, :] - points_mm[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return float(d[i, j]), int(i), int(j)


def _boundary(mask2d: np.ndarray) -> np.ndarray:
    return mask2d & ~ndimage.binary_erosion(mask2d)


def measure_mask(volume: CTVolume, full_mask: np.ndarray) -> NoduleMeasurement:
    """Measure one nodule from its boolean mask on ``volume``'s grid (axial long/short axis)."""
    if not full_mask.any():
        raise ValueError("empty nodule mask")
    g = volume.geometry
    sx, sy, _ = g.spacing
    zz, yy, xx = np.nonzero(full_mask)
    lo = np.array([zz.min(), yy.min(), xx.min()])
    hi = np.array([zz.max(), yy.max(), xx.max()]) + 1
    box = full_mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]

    best = (-1.0, 0, None, None)  # (long, z, end points (y, x) index pairs, short)
    for z in range(box.shape[0]):
        sl = box[z]
        if not sl.any():
            continue
        pts = np.argwhere(_boundary(sl)).astype(float)  # (y, x)
        mm = pts * np.array([sy, sx])
        long_mm, i, j = _feret(mm)
        if long_mm > best[0]:
            axis = mm[j] - mm[i]
            if long_mm > 0:
                perp = np.array([-axis[1], axis[0]]) / long_mm
                proj = mm @ perp
                short_mm = float(proj.max() - proj.min())
            else:
                short_mm = 0.0
            # Add one voxel: boundary pixel centres underestimate the extent by a pixel.
            best = (long_mm + min(sx, sy), z, (pts[i], pts[j]), short_mm + min(sx, sy))
    long_mm, zbox, (p0, p1), short_mm = best
    zabs = int(lo[0] + zbox)
    ends = tuple(
        tuple(float(v) for v in g.index_to_lps([zabs, lo[1] + p[0], lo[2] + p[1]])) for p in (p0, p1)
    )
    hu = volume.hu[full_mask].astype(float)
    mean_hu = float(hu.mean())
    solid_frac = float((hu > -300).mean())
    consistency = "solid" if solid_frac > 0.8 else ("ground_glass" if solid_frac < 0.2 else "part_solid")
    center = tuple(float(v) for v in g.index_to_lps(np.array([zz.mean(), yy.mean(), xx.mean()])))
    mean_d = (long_mm + short_mm) / 2
    return NoduleMeasurement(
        center_mm=center,  # type: ignore[arg-type]
        volume_mm3=float(full_mask.sum() * g.voxel_volume_mm3),
        long_axis_mm=long_mm,
        short_axis_mm=short_mm,
        mean_diameter_mm=mean_d,
        solid_component_mm=mean_d if consistency == "solid" else (mean_d * solid_frac if consistency == "part_solid" else 0.0),
        mean_hu=mean_hu,
        consistency=consistency,  # type: ignore[arg-type]
        long_axis_endpoints_mm=ends,  # type: ignore[arg-type]
        long_axis_slice=zabs,
        mask=box.copy(),
        mask_offset=(int(lo[0]), int(lo[1]), int(lo[2])),
    )


def _forecast(volume: CTVolume, m: NoduleMeasurement, vdt_days: float | None, horizon_days: int, model_version: str) -> Forecast:
    """Exponential extrapolation of the volume with a ±20 % band; predicted mask = dilated current."""
    growth = 2 ** (horizon_days / vdt_days) if vdt_days and vdt_days > 0 else 1.0
    v = m.volume_mm3 * growth
    d = m.mean_diameter_mm * growth ** (1 / 3)
    full = m.full_mask(volume.hu.shape)
    # Dilate by the predicted radius increase (in voxels, at least one so the extent is visible).
    grow_mm = max(d - m.mean_diameter_mm, 0.0) / 2
    iterations = max(1, int(round(grow_mm / min(volume.geometry.spacing[:2]))))
    pred = ndimage.binary_dilation(full, iterations=iterations)
    zz, yy, xx = np.nonzero(pred)
    lo = (int(zz.min()), int(yy.min()), int(xx.min()))
    hi = (int(zz.max()) + 1, int(yy.max()) + 1, int(xx.max()) + 1)
    return Forecast(
        horizon_days=horizon_days, volume_mm3=v, volume_low_mm3=v * 0.8, volume_high_mm3=v * 1.2,
        mean_diameter_mm=d, mean_diameter_low_mm=d * 0.8 ** (1 / 3), mean_diameter_high_mm=d * 1.2 ** (1 / 3),
        model_version=model_version, mask=pred[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].copy(), mask_offset=lo,
    )


def tracked_nodules_from_labels(
    prior: CTVolume | None,
    prior_labels: np.ndarray | None,
    current: CTVolume,
    current_labels: np.ndarray,
    nodule_labels: list[int],
    *,
    patient_key: str = "",
    horizon_days: int = 365,
    model_version: str = "test-1",
) -> list[TrackedNodule]:
    """TrackedNodules for the label values ``nodule_labels`` (same value = same nodule at both times)."""
    interval = None
    if prior is not None and prior.study_date and current.study_date:
        interval = (current.study_date - prior.study_date).days
    out: list[TrackedNodule] = []
    for k, label in enumerate(nodule_labels, start=1):
        cur_mask = current_labels == label
        cur = measure_mask(current, cur_mask) if cur_mask.any() else None
        pri = None
        if prior is not None and prior_labels is not None and (prior_labels == label).any():
            pri = measure_mask(prior, prior_labels == label)
        status = "tracked" if (cur and pri) else ("new" if cur else "resolved")
        vdt = change = None
        if cur and pri and interval:
            change = 100.0 * (cur.volume_mm3 - pri.volume_mm3) / pri.volume_mm3
            if cur.volume_mm3 > pri.volume_mm3:
                vdt = interval * math.log(2) / math.log(cur.volume_mm3 / pri.volume_mm3)
        fc = _forecast(current, cur, vdt, horizon_days, model_version) if cur is not None else None
        out.append(TrackedNodule(
            tracking_uid=derived_uid("test-nodule", patient_key or current.patient_id, str(label)),
            tracking_id=f"Nodule {k}", status=status, current=cur, prior=pri, interval_days=interval,
            match_confidence=1.0 if status == "tracked" else None, vdt_days=vdt, volume_change_pct=change, forecast=fc,
        ))
    return out


@dataclass
class PhantomCase:
    """A phantom patient's prior and current studies with the writers' inputs derived from them."""

    seed: int
    prior: CTVolume
    current: CTVolume
    nodules: list[TrackedNodule]
    recommendation: Any  # reports.guidelines.recommend.StudyRecommendation
    variant: str  # the phantom's pixel storage variant (for writing the CT files)


@functools.lru_cache(maxsize=8)
def phantom_case(seed: int, rows: int = 128, slices: int = 64, screening: bool = True,
                 model_version: str = "test-1", horizon_days: int = 365) -> PhantomCase:
    """Phantom ``seed`` at two time points, measured from its label maps, with the real guideline engine's
    recommendation (Lung-RADS when ``screening``, else Fleischner). Cached: generation takes seconds."""
    from inference.phantoms.patient import generate_patient
    from reports.guidelines.recommend import NoduleInput, StudyContext, recommend

    patient = generate_patient(seed, timepoints=2, rows=rows, slices=slices)
    t0, t1 = patient.timepoints
    labels = list(range(1, len(patient.nodules) + 1))  # phantom: label k = nodule k
    nodules = tracked_nodules_from_labels(
        t0.volume, t0.labels, t1.volume, t1.labels, labels, patient_key=f"phantom-{seed}",
        horizon_days=horizon_days, model_version=model_version,
    )
    present = [n for n in nodules if n.current is not None]
    study_date = t1.volume.study_date
    assert study_date is not None
    rec = recommend([NoduleInput.from_tracked(n, study_date) for n in present],
                    StudyContext(study_date=study_date, screening=screening)) if present else None
    return PhantomCase(seed, t0.volume, t1.volume, nodules, rec, t1.study["pixel_variant"])


def write_ct(case_volume: CTVolume, variant: str, out_dir: Path) -> list[Path]:
    """Write a phantom CT series (header-only slice datasets + HU) as Part 10 files."""
    from inference.phantoms.dicom import write_slices

    return write_slices(case_volume.slice_datasets, case_volume.hu, variant, out_dir)
