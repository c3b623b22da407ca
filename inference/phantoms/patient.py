"""Phantom patients: anatomy + nodules with known growth, imaged at several time points.

A patient is drawn from a seed: one anatomy, 1–4 nodules (consistency, margin, location, growth
pattern), and ``timepoints`` CT studies at realistic intervals (3–24 months). Each study sees the
same anatomy through its own small rigid repositioning (≤ 1.5° about a random axis and a few mm, so
two studies differ by ≤ 3°), with its own pixel spacing, slice thickness, noise level, scanner and
a new FrameOfReferenceUID. The ground truth (``truth.json``) gives each nodule's centroid in each
study's own LPS coordinates and its exact volume, diameters and solid component.

Independent random streams (anatomy, nodules, each study) are derived from the seed, so changing the
image size for a quick test does not change the patient.

``truth.json`` (see :meth:`PhantomPatient.truth`):

* ``timepoints[]``: ``index``, ``dir`` (``T0``…), study/series/frame-of-reference UIDs, ``study_date``,
  ``days_from_baseline``, ``slice_thickness_mm``, ``pixel_spacing_mm``, ``noise_hu``, ``n_slices``,
  ``rows``, ``manufacturer``, ``convolution_kernel`` and ``anatomy_to_patient`` (4×4, anatomy mm →
  this study's LPS; the true registration T_a → T_b is ``P_b · P_a⁻¹``).
* ``nodules[]``: ``id`` (``N1``… = label value 1…), ``consistency`` (at first appearance), ``margin``,
  ``location``, ``pattern``, ``vdt_days`` (> 0 doubling time, < 0 halving time, null = constant),
  ``hu`` and per time point ``present``, ``center_mm`` (centroid, LPS), ``volume_mm3`` (exact),
  ``equivalent_diameter_mm``, ``mask_volume_mm3`` (the label mask's voxel volume), ``long_axis_mm`` / ``short_axis_mm`` / ``mean_diameter_mm`` (axial plane
  with the longest diameter, CLINICAL.md), ``solid_volume_mm3``, ``solid_component_mm`` and
  ``consistency`` (it changes for ``gg_to_part_solid``).

The header-only slice datasets in ``PhantomTimepoint.volume.slice_datasets`` share their data
elements across slices: treat them as read-only (``dicom.write_slices`` copies before adding pixels).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..types import CTVolume, VolumeGeometry
from . import dicom as D
from .anatomy import Anatomy, random_anatomy
from .render import StudyGrid, kernel_threads, noise_and_quantise, render_anatomy, render_tubes
from .shapes import (
    RadialShape,
    axial_diameters,
    make_shape,
    occupancy,
    random_rotation,
    blend_nodule,
    table_directions,
    volume_preserving_mask,
)

PATTERNS = ("growing", "stable", "shrinking", "gg_to_part_solid", "new", "resolved")
CONSISTENCIES = ("solid", "part_solid", "ground_glass")
MARGINS = ("smooth", "lobulated", "spiculated")
LOCATIONS = ("central", "juxtapleural", "perivascular")
SLICE_THICKNESSES = (0.625, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5)
ISSUER = "NODULETRACK-PHANTOM"

_SURNAMES = ("ALDER", "BIRCH", "CEDAR", "DOGWOOD", "ELM", "FIR", "GINKGO", "HAZEL", "IVY", "JUNIPER",
             "LARCH", "MAPLE", "OAK", "PINE", "ROWAN", "SPRUCE", "TAMARACK", "WILLOW", "YEW", "ASPEN")  # fmt: skip
_GIVEN = {"F": ("ANNA", "BEATRIX", "CLARA", "DORA", "EDITH", "FRIDA", "GRETA", "HELGA"),
          "M": ("ANTON", "BRUNO", "CARL", "DIETER", "EMIL", "FRANZ", "GUSTAV", "HUGO")}  # fmt: skip


def _stream(seed: int, *names: object) -> np.random.Generator:
    """An independent generator for one purpose, derived from the seed (stable across versions)."""
    key = [seed] + [int.from_bytes(str(n).encode(), "little") % (2**32) for n in names]
    return np.random.default_rng(key)


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _sphere_volume(d: float) -> float:
    return math.pi / 6.0 * d**3


def _eq_diameter(v: float) -> float:
    return (6.0 * v / math.pi) ** (1.0 / 3.0)


@dataclass
class PhantomNoduleTruth:
    """One nodule's design and its per-time-point ground truth (``timepoints`` = truth dicts)."""

    id: str
    consistency: str  # at its first appearance
    margin: str
    location: str
    pattern: str
    vdt_days: float | None  # > 0 doubling time, < 0 halving time (shrinking), None = constant
    timepoints: list[dict[str, Any]] = field(default_factory=list)
    # design (anatomy frame), used by the renderer
    shape: RadialShape | None = None  # unit equivalent radius (1 mm)
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # local → anatomy
    core: RadialShape | None = None  # unit equivalent radius, in the core frame
    core_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # core → nodule local
    core_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # in units of outer r_eq
    hu_gg: float = -500.0
    hu_solid: float = 40.0
    volumes: list[float] = field(default_factory=list)  # per time point, 0 = absent
    core_fractions: list[float] = field(default_factory=list)  # solid volume / volume per time point
    centers: list[np.ndarray | None] = field(default_factory=list)  # star centre, anatomy mm

    def present(self, t: int) -> bool:
        return self.volumes[t] > 0

    def scale(self, t: int) -> float:
        """Equivalent-sphere radius (mm) at time point ``t``."""
        return (3.0 * self.volumes[t] / (4.0 * math.pi)) ** (1.0 / 3.0)

    def consistency_at(self, t: int) -> str:
        if self.consistency == "solid":
            return "solid"
        return "part_solid" if self.core_fractions[t] > 0 else "ground_glass"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "consistency": self.consistency,
            "margin": self.margin,
            "location": self.location,
            "pattern": self.pattern,
            "vdt_days": None if self.vdt_days is None else round(float(self.vdt_days), 1),
            "hu": {"ground_glass": round(self.hu_gg, 1), "solid": round(self.hu_solid, 1)},
            "timepoints": self.timepoints,
        }


@dataclass
class PhantomTimepoint:
    """One CT study of a phantom patient."""

    index: int
    volume: CTVolume
    days_from_baseline: int
    # int16, k = nodule k (1-based in patient.nodules order): the voxels with the highest partial-volume
    # occupancy, as many as the occupancy sums to (≈ occupancy ≥ 0.5, but volume-preserving, so that
    # the mask volume matches the true volume to within half a voxel of rounding)
    labels: np.ndarray
    solid_labels: np.ndarray  # int16, the same for the solid part (whole nodule if solid, core if part-solid)
    pixel_spacing_mm: float
    slice_thickness_mm: float
    noise_hu: float
    study: dict[str, Any]  # header values (scanner, kernel, accession, ...)
    anatomy_to_patient: np.ndarray  # 4×4: anatomy mm → this study's LPS

    @property
    def dir_name(self) -> str:
        return f"T{self.index}"


@dataclass
class PhantomPatient:
    """A phantom patient: studies (``timepoints``) and nodule ground truth."""

    seed: int
    patient_id: str
    patient: dict[str, Any]
    timepoints: list[PhantomTimepoint]
    nodules: list[PhantomNoduleTruth]
    anatomy: Anatomy

    def truth(self) -> dict[str, Any]:
        """The ``truth.json`` content."""
        tps = []
        for tp in self.timepoints:
            v = tp.volume
            tps.append(
                {
                    "index": tp.index,
                    "dir": tp.dir_name,
                    "study_instance_uid": v.study_instance_uid,
                    "series_instance_uid": v.series_instance_uid,
                    "frame_of_reference_uid": v.frame_of_reference_uid,
                    "study_date": v.study_date.isoformat() if v.study_date else None,
                    "days_from_baseline": tp.days_from_baseline,
                    "slice_thickness_mm": round(tp.slice_thickness_mm, 4),
                    "pixel_spacing_mm": round(tp.pixel_spacing_mm, 4),
                    "noise_hu": round(tp.noise_hu, 2),
                    "n_slices": int(v.hu.shape[0]),
                    "rows": int(v.hu.shape[1]),
                    "manufacturer": tp.study["manufacturer"],
                    "convolution_kernel": tp.study["kernel"],
                    "anatomy_to_patient": [[round(float(x), 6) for x in row] for row in tp.anatomy_to_patient],
                }
            )
        return {
            "patient_id": self.patient_id,
            "seed": self.seed,
            "generator": "noduletrack.inference.phantoms",
            "timepoints": tps,
            "nodules": [n.to_json() for n in self.nodules],
        }


# ---------------------------------------------------------------------------------------------
# nodule design


def _choose(rng: np.random.Generator, options: tuple[str, ...], weights: tuple[float, ...]) -> str:
    w = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def _design_nodule(
    rng: np.random.Generator,
    k: int,
    days: list[int],
    *,
    pattern: str | None = None,
    change_at: int | None = None,
) -> PhantomNoduleTruth:
    """Pattern, consistency, margin, volumes over time and the solid-core schedule.

    ``change_at`` fixes the time point where a new nodule appears, a resolved one is gone, or a
    ground-glass nodule first shows a solid part (default: drawn).
    """
    n_t = len(days)
    if pattern is not None:
        if pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    elif n_t >= 2:
        pattern = _choose(rng, PATTERNS, (0.34, 0.2, 0.12, 0.12, 0.11, 0.11))
    else:
        pattern = _choose(rng, ("growing", "stable"), (0.5, 0.5))
    if pattern == "gg_to_part_solid":
        consistency = "ground_glass"
    else:
        consistency = _choose(rng, CONSISTENCIES, (0.5, 0.25, 0.25))
    margin = _choose(rng, MARGINS, (0.4, 0.3, 0.3))
    location = _choose(rng, LOCATIONS, (0.45, 0.3, 0.25))
    t_last = float(days[-1])
    v_cap = _sphere_volume(30.0)
    vdt: float | None = None
    volumes = [0.0] * n_t
    if pattern == "growing":
        d0 = _loguniform(rng, 4.0, 18.0)
        vdt = _loguniform(rng, 100.0, 1500.0)
        if t_last > 0:
            vdt = max(vdt, t_last / math.log2(v_cap / _sphere_volume(d0)))
        volumes = [_sphere_volume(d0) * 2.0 ** (d / vdt) for d in days]
    elif pattern == "stable":
        volumes = [_sphere_volume(_loguniform(rng, 3.0, 30.0))] * n_t
    elif pattern == "shrinking":
        d0 = rng.uniform(7.0, 25.0)
        halving = _loguniform(rng, 120.0, 600.0)
        if t_last > 0:  # keep it visible: no smaller than a 3 mm sphere at the last study
            halving = max(halving, t_last / math.log2(_sphere_volume(d0) / _sphere_volume(3.0)))
        vdt = -halving
        volumes = [_sphere_volume(d0) * 2.0 ** (d / vdt) for d in days]
    elif pattern == "gg_to_part_solid":
        d0 = rng.uniform(6.0, 20.0)
        vdt = _loguniform(rng, 400.0, 1500.0)
        if t_last > 0:
            vdt = max(vdt, t_last / math.log2(v_cap / _sphere_volume(d0)))
        volumes = [_sphere_volume(d0) * 2.0 ** (d / vdt) for d in days]
    elif pattern == "new":
        j = change_at if change_at is not None else int(rng.integers(1, n_t))
        d_app = rng.uniform(3.0, 8.0)
        vdt = _loguniform(rng, 150.0, 800.0)
        volumes = [0.0 if i < j else _sphere_volume(d_app) * 2.0 ** ((days[i] - days[j]) / vdt) for i in range(n_t)]
    elif pattern == "resolved":
        j = change_at if change_at is not None else int(rng.integers(1, n_t))
        d0 = rng.uniform(4.0, 15.0)
        volumes = [_sphere_volume(d0) if i < j else 0.0 for i in range(n_t)]
    # solid core schedule (fraction of the nodule volume)
    fractions = [0.0] * n_t
    if consistency == "part_solid":
        f0 = rng.uniform(0.08, 0.35)
        first = next(i for i in range(n_t) if volumes[i] > 0)
        fractions = [0.0 if v == 0 else min(0.6, f0 * (v / volumes[first]) ** 0.5) for v in volumes]
    elif pattern == "gg_to_part_solid":
        j = change_at if change_at is not None else int(rng.integers(1, n_t))
        f = rng.uniform(0.04, 0.1)
        for i in range(j, n_t):
            fractions[i] = min(0.45, f * 2.0 ** (i - j))
    hu_gg = rng.uniform(-600.0, -400.0)
    hu_solid = rng.uniform(20.0, 60.0)
    return PhantomNoduleTruth(
        id=f"N{k + 1}", consistency=consistency, margin=margin, location=location, pattern=pattern,
        vdt_days=vdt, volumes=volumes, core_fractions=fractions, hu_gg=hu_gg, hu_solid=hu_solid,
    )  # fmt: skip


def _fit_core(rng: np.random.Generator, nod: PhantomNoduleTruth) -> None:
    """A smooth solid core inside the ground-glass part at every time point (checked, shrunk if not)."""
    f_max = max(nod.core_fractions)
    if f_max <= 0:
        return
    core, _ = make_shape(rng, "smooth" if rng.random() < 0.6 else "lobulated")
    q = random_rotation(rng)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    offset = direction * rng.uniform(0.0, 0.25)
    dirs = table_directions()[::6, ::6].reshape(-1, 3)
    r_core = core.radius(dirs)
    assert nod.shape is not None
    for _ in range(30):
        rc = f_max ** (1.0 / 3.0)
        pts = offset + (dirs * (r_core * rc)[:, None]) @ q.T
        if np.all(nod.shape.contains(pts / 0.9)):
            break
        offset *= 0.7
        if np.linalg.norm(offset) < 0.02:
            scale = 0.85
            nod.core_fractions = [f * scale for f in nod.core_fractions]
            f_max *= scale
    nod.core, nod.core_rotation, nod.core_offset = core, q, offset


def _max_radius(nod: PhantomNoduleTruth) -> float:
    assert nod.shape is not None
    return nod.shape.r_max * max(nod.scale(t) for t in range(len(nod.volumes)) if nod.present(t))


def _place_nodules(rng: np.random.Generator, an: Anatomy, nodules: list[PhantomNoduleTruth]) -> None:
    """Shape, orientation and centre (per time point) of every nodule, inside the lungs, apart."""
    lo = np.array([-an.body_a, -an.body_b, an.dome_z])
    hi = np.array([an.body_a, an.body_b, an.apex_z])
    cand = lo + rng.random((20000, 3)) * (hi - lo)
    d_lung = an.lung_distance(cand)
    inside = cand[d_lung < -4.0]
    vessels = [t for t in an.tubes if t.kind == "vessel" and 1.0 <= 0.5 * (t.r0 + t.r1) <= 3.5]
    placed: list[tuple[np.ndarray, float]] = []
    n_t = len(nodules[0].volumes) if nodules else 0
    for nod in nodules:
        q = random_rotation(rng)
        nod.rotation = q
        for attempt in range(600):
            if attempt and attempt % 150 == 0:
                # crowded or too large for this chest: make the nodule smaller (the growth law is
                # unchanged by a constant factor on every volume) and try again
                nod.volumes = [v * 0.5 for v in nod.volumes]
            location = nod.location if attempt < 450 else "central"
            centers: list[np.ndarray | None] = [None] * n_t
            if location == "juxtapleural":
                # a lateral/posterior point a little inside the lung, projected onto the chest wall
                p = inside[int(rng.integers(len(inside)))]
                if abs(p[0]) < an.med_w + 35.0 or p[2] < an.dome_z + 40 or p[2] > an.apex_z - 30:
                    continue
                n = _gradient(an.wall_distance, p)
                for _ in range(3):  # project onto the costal lung surface
                    b = p - n * float(an.wall_distance(p)[0])
                    n = _gradient(an.wall_distance, b)
                    p = b
                if abs(float(an.lung_distance(b)[0])) > 1.0:
                    continue  # not a chest-wall surface point (mediastinum, diaphragm, apex)
                if nod.shape is None or attempt % 50 == 0:
                    nod.shape, _ = make_shape(rng, nod.margin, flat_axis=q.T @ n, avoid_dir=q.T @ n)
                r_out = float(nod.shape.radius((q.T @ n)[None])[0])
                gap = rng.uniform(-0.6, 0.2)
                for t in range(n_t):
                    if nod.present(t):
                        centers[t] = b - n * (r_out * nod.scale(t) + gap)
            elif location == "perivascular" and vessels:
                tube = vessels[int(rng.integers(len(vessels)))]
                if nod.shape is None or attempt % 50 == 0:
                    nod.shape, _ = make_shape(rng, nod.margin)
                a, bb = np.array(tube.p0), np.array(tube.p1)
                s = rng.uniform(0.25, 0.75)
                axis = (bb - a) / np.linalg.norm(bb - a)
                perp = np.cross(axis, rng.standard_normal(3))
                perp /= np.linalg.norm(perp)
                base = a + s * (bb - a)
                r_v = tube.r0 + s * (tube.r1 - tube.r0)
                r_in = float(nod.shape.radius((q.T @ -perp)[None])[0])
                for t in range(n_t):
                    if nod.present(t):
                        centers[t] = base + perp * (r_v + 0.85 * r_in * nod.scale(t))
            else:
                if nod.shape is None or attempt % 50 == 0:
                    nod.shape, _ = make_shape(rng, nod.margin)
                p = inside[int(rng.integers(len(inside)))]
                for t in range(n_t):
                    if nod.present(t):
                        centers[t] = p.copy()
            r_max = _max_radius(nod)
            pts = np.array([c for c in centers if c is not None])
            d = an.lung_distance(pts)
            if location == "central" and np.any(d > -r_max - 5.0):
                continue
            if location == "perivascular" and np.any(d > -r_max - 2.0):
                continue
            if location == "juxtapleural" and np.any(an.lung_distance(pts) > -0.5 * r_max):
                continue
            if any(np.linalg.norm(pts - c0, axis=1).min() < r_max + r0 + 4.0 for c0, r0 in placed):
                continue
            nod.location = location
            nod.centers = centers
            placed.extend((c, r_max) for c in pts)
            break
        else:
            raise RuntimeError(f"could not place nodule {nod.id} in this anatomy (seed too crowded?)")
        _fit_core(rng, nod)


def _gradient(fn, p: np.ndarray, h: float = 0.5) -> np.ndarray:
    """Unit gradient of a scalar field ``fn((n, 3)) -> (n,)`` at ``p`` (central differences)."""
    e = np.eye(3) * h
    g = (fn(p + e) - fn(p - e)) / (2 * h)
    return g / max(float(np.linalg.norm(g)), 1e-9)


# ---------------------------------------------------------------------------------------------
# studies


def _rotation_about(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array(
        [
            [c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
            [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
            [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)],
        ]
    )


def _patient_info(seed: int, rng: np.random.Generator, baseline: _dt.date) -> dict[str, Any]:
    sex = "F" if rng.random() < 0.5 else "M"
    age_days = int(rng.uniform(50, 80) * 365.25)
    return {
        "patient_id": f"PT{seed:06d}",
        "name": f"PHANTOM^{_SURNAMES[int(rng.integers(len(_SURNAMES)))]}^{_GIVEN[sex][int(rng.integers(8))]}",
        "sex": sex,
        "birth_date": baseline - _dt.timedelta(days=age_days),
        "issuer": ISSUER,
    }


def _age(birth: _dt.date, on: _dt.date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def _study_info(seed: int, t: int, rng: np.random.Generator, date: _dt.date, patient: dict[str, Any]) -> dict[str, Any]:
    manufacturer, model, software, kernels, variant = D.SCANNERS[int(rng.integers(len(D.SCANNERS)))]
    sharpness = int(rng.integers(len(kernels)))
    kvp = float(rng.choice([100.0, 120.0, 120.0, 140.0]))
    ma = float(rng.uniform(40, 300))
    hh, mm, ss = int(rng.integers(7, 19)), int(rng.integers(60)), int(rng.integers(60))
    return {
        "manufacturer": manufacturer,
        "model": model,
        "software": software,
        "kernel": kernels[sharpness],
        "sharpness": sharpness,  # 0 = sharpest
        "pixel_variant": variant,
        "kvp": kvp,
        "tube_current_ma": ma,
        "exposure_time_ms": 500.0,
        "exposure_mas": ma * 0.5,
        "date": date,
        "time": f"{hh:02d}{mm:02d}{ss:02d}",
        "accession": f"A{seed % 10**7:07d}{t:02d}",
        "study_id": f"{(seed * 7 + t) % 10**6:06d}",
        "series_number": int(rng.integers(2, 6)),
        "study_uid": D.phantom_uid(seed, t, "study"),
        "series_uid": D.phantom_uid(seed, t, "series"),
        "for_uid": D.phantom_uid(seed, t, "frame-of-reference"),
        "age": _age(patient["birth_date"], date),
        "table_height": float(rng.uniform(120.0, 180.0)),
    }


def _render_nodules(
    nodules: list[PhantomNoduleTruth],
    t: int,
    grid: StudyGrid,
    hu: np.ndarray,
    labels: np.ndarray,
    solid: np.ndarray,
    lung_hu: float,
) -> dict[int, int]:
    """Blend every nodule present at ``t`` into ``hu``, write its label masks; return voxel counts."""
    counts: dict[int, int] = {}
    A = grid.index_to_anatomy_affine()
    sp = np.array([grid.pixel_mm, grid.pixel_mm, grid.slice_mm])
    for k, nod in enumerate(nodules, start=1):
        if not nod.present(t):
            continue
        assert nod.shape is not None and nod.centers[t] is not None
        c = nod.centers[t]
        s = nod.scale(t)
        outer = nod.shape.scaled(s)
        q = nod.rotation
        reach = outer.r_max + 1.5 * sp.max()
        ci = grid.anatomy_to_index(c)
        lo = np.floor(ci - reach / sp).astype(int)
        hi = np.ceil(ci + reach / sp).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [grid.cols, grid.rows, grid.nz])
        if np.any(hi <= lo):
            continue
        box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        shape = (hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0])
        # box index → nodule local mm
        L = np.zeros((3, 4))
        L[:, :3] = q.T @ A[:, :3]
        L[:, 3] = q.T @ (A[:, :3] @ lo + A[:, 3] - c)
        occ = occupancy(outer, L, shape)
        view = hu[box]
        solid_outer = nod.consistency == "solid"
        blend_nodule(view, occ, nod.hu_solid if solid_outer else nod.hu_gg, lung_hu, solid_outer)
        mask = volume_preserving_mask(occ)
        labels[box][mask] = k
        counts[k] = int(mask.sum())
        if nod.consistency == "solid":
            solid[box][mask] = k
        elif nod.core_fractions[t] > 0 and nod.core is not None:
            rc = (nod.core_fractions[t] ** (1.0 / 3.0)) * s
            core = nod.core.scaled(rc)
            Lc = np.zeros((3, 4))
            Lc[:, :3] = nod.core_rotation.T @ L[:, :3]
            Lc[:, 3] = nod.core_rotation.T @ (L[:, 3] - nod.core_offset * s)
            occ_c = occupancy(core, Lc, shape)
            blend_nodule(view, occ_c, nod.hu_solid, lung_hu, True)
            solid[box][volume_preserving_mask(occ_c)] = k
    return counts


def _nodule_truth(nod: PhantomNoduleTruth, t: int, pose: np.ndarray) -> dict[str, Any]:
    """Ground truth of one nodule at one study (``pose``: anatomy → LPS 4×4)."""
    if not nod.present(t):
        return {"present": False, "center_mm": None, "volume_mm3": 0.0, "mean_diameter_mm": 0.0,
                "long_axis_mm": 0.0, "short_axis_mm": 0.0, "solid_volume_mm3": 0.0,
                "solid_component_mm": 0.0, "consistency": None}  # fmt: skip
    assert nod.shape is not None and nod.centers[t] is not None
    s = nod.scale(t)
    outer = nod.shape.scaled(s)
    R = pose[:3, :3]
    centroid_anat = nod.centers[t] + nod.rotation @ outer.centroid()
    center = R @ centroid_anat + pose[:3, 3]
    long_ax, short_ax = axial_diameters(outer, R @ nod.rotation)
    volume = outer.volume()
    consistency = nod.consistency_at(t)
    if consistency == "solid":
        solid_v, solid_d = volume, (long_ax + short_ax) / 2.0
    elif consistency == "part_solid" and nod.core is not None:
        rc = (nod.core_fractions[t] ** (1.0 / 3.0)) * s
        core = nod.core.scaled(rc)
        solid_v = core.volume()
        cl, cs = axial_diameters(core, R @ nod.rotation @ nod.core_rotation)
        solid_d = (cl + cs) / 2.0
    else:
        solid_v, solid_d = 0.0, 0.0
    return {
        "present": True,
        "center_mm": [round(float(x), 3) for x in center],
        "volume_mm3": round(volume, 3),
        "equivalent_diameter_mm": round(_eq_diameter(volume), 3),
        "mean_diameter_mm": round((long_ax + short_ax) / 2.0, 2),
        "long_axis_mm": round(long_ax, 2),
        "short_axis_mm": round(short_ax, 2),
        "solid_volume_mm3": round(solid_v, 3),
        "solid_component_mm": round(solid_d, 2),
        "consistency": consistency,
    }


class _Clock:
    """Accumulates wall time per stage into an optional dict."""

    def __init__(self, sink: dict[str, float] | None) -> None:
        self.sink = sink
        self.t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.sink is not None:
            self.sink[stage] = self.sink.get(stage, 0.0) + now - self.t
        self.t = now


def generate_patient(
    seed: int,
    timepoints: int = 2,
    *,
    rows: int = 512,
    n_nodules: tuple[int, int] = (1, 4),
    slices: int | None = None,
    noise_hu: float | None = None,
    timings: dict[str, float] | None = None,
) -> PhantomPatient:
    """Draw and image one phantom patient.

    ``rows`` sets the in-plane matrix (rows = columns); the field of view stays anatomical, so a
    smaller matrix means larger pixels (for fast tests). ``slices`` fixes the number of slices
    (slice spacing = coverage / slices) instead of drawing a clinical slice thickness. ``noise_hu``
    fixes the noise level (otherwise drawn per study, 10–40 HU depending on the kernel).
    Deterministic: the same arguments give identical arrays, headers and UIDs. ``timings``, when
    given, accumulates seconds per stage (for ``bench/phantom.py``).
    """
    clock = _Clock(timings)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 1 <= timepoints <= 12:
        raise ValueError(f"timepoints must be between 1 and 12, got {timepoints}")
    if not 32 <= rows <= 2048:
        raise ValueError(f"rows must be between 32 and 2048, got {rows}")
    lo_n, hi_n = n_nodules
    if not 0 <= lo_n <= hi_n <= 8:
        raise ValueError(f"n_nodules must be (lo, hi) with 0 <= lo <= hi <= 8, got {n_nodules}")
    if slices is not None and not 8 <= slices <= 2000:
        raise ValueError(f"slices must be between 8 and 2000, got {slices}")
    if noise_hu is not None and not 0 <= noise_hu <= 200:
        raise ValueError(f"noise_hu must be between 0 and 200, got {noise_hu}")
    seed = int(seed)
    an = random_anatomy(_stream(seed, "anatomy"))
    clock.lap("anatomy design")
    rng_s = _stream(seed, "schedule")
    baseline = _dt.date(2018, 1, 1) + _dt.timedelta(days=int(rng_s.integers(0, 2500)))
    days = [0]
    for _ in range(timepoints - 1):
        days.append(days[-1] + int(rng_s.integers(91, 731)))
    patient = _patient_info(seed, rng_s, baseline)
    # nodules
    rng_n = _stream(seed, "nodules")
    count = int(rng_n.integers(lo_n, hi_n + 1))
    nodules = [_design_nodule(rng_n, k, days) for k in range(count)]
    _place_nodules(rng_n, an, nodules)
    clock.lap("nodule design")
    # the patient's position on the table, then a small repositioning per study
    rng_p = _stream(seed, "pose")
    t_base = np.array([rng_p.uniform(-10, 10), rng_p.uniform(-20, 10), rng_p.uniform(-60, 60) - 150.0])
    tps: list[PhantomTimepoint] = []
    mask_counts: list[dict[int, int]] = []
    for t, day in enumerate(days):
        rng_t = _stream(seed, "study", t)
        axis = rng_t.standard_normal(3)
        rot = _rotation_about(axis, math.radians(rng_t.uniform(0.2, 1.5)))
        trans = t_base + rng_t.uniform(-4.0, 4.0, 3)
        date = baseline + _dt.timedelta(days=day)
        study = _study_info(seed, t, rng_t, date, patient)
        fov = rng_t.uniform(max(2 * an.body_a + 40.0, 282.0), 460.0)
        pixel = fov / rows
        z_lo, z_hi = an.z_lo - rng_t.uniform(0, 15), an.z_hi + rng_t.uniform(0, 15)
        if slices is None:
            slice_mm = float(rng_t.choice(SLICE_THICKNESSES))
            nz = int(math.ceil((z_hi - z_lo) / slice_mm)) + 1
        else:
            nz = slices
            slice_mm = (z_hi - z_lo) / (slices - 1)
        # reconstruction centre: near the patient, off by a few mm (table height, centring)
        centre = trans[:2] + rng_t.uniform(-8.0, 8.0, 2)
        origin = (
            round(float(centre[0] - fov / 2 + pixel / 2), 4),
            round(float(centre[1] - fov / 2 + pixel / 2), 4),
            round(float(trans[2] + z_lo), 4),
        )
        grid = StudyGrid(rows, rows, nz, pixel, slice_mm, origin, rot, trans)
        clock.lap("study setup")
        hu = render_anatomy(an, grid)
        clock.lap("render anatomy")
        render_tubes(hu, an.tubes, grid)
        clock.lap("render vessels+airways")
        labels = np.zeros(hu.shape, dtype=np.int16)
        solid = np.zeros(hu.shape, dtype=np.int16)
        with kernel_threads():
            mask_counts.append(_render_nodules(nodules, t, grid, hu, labels, solid, an.hu_lung))
        clock.lap("render nodules")
        sigma = noise_hu if noise_hu is not None else float(rng_t.uniform(10.0, 22.0) + 6.0 * (3 - study["sharpness"]))
        corr = 0.55 + 0.2 * study["sharpness"]
        hu_i16 = noise_and_quantise(hu, rng_t, sigma, corr)
        del hu
        clock.lap("noise+quantise")
        study["series_description"] = f"CHEST {slice_mm:g}mm {study['kernel']}"
        positions = np.array([[origin[0], origin[1], origin[2] + k * slice_mm] for k in range(nz)])
        sop_uids = [D.phantom_uid(seed, t, "sop", k) for k in range(nz)]
        headers = D.series_headers(
            patient=patient, study=study, rows=rows, cols=rows, pixel_mm=pixel, slice_mm=slice_mm,
            positions=positions, sop_uids=sop_uids,
        )  # fmt: skip
        geometry = VolumeGeometry(
            origin=origin, spacing=(pixel, pixel, slice_mm), direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), shape=hu_i16.shape
        )
        volume = CTVolume(
            hu=hu_i16, geometry=geometry, study_instance_uid=study["study_uid"], series_instance_uid=study["series_uid"],
            frame_of_reference_uid=study["for_uid"], sop_instance_uids=sop_uids, study_date=date,
            patient_id=patient["patient_id"], series_description=study["series_description"], slice_datasets=headers,
        )  # fmt: skip
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rot, trans
        clock.lap("dicom headers")
        tps.append(
            PhantomTimepoint(
                index=t, volume=volume, days_from_baseline=day, labels=labels, solid_labels=solid,
                pixel_spacing_mm=pixel, slice_thickness_mm=slice_mm, noise_hu=sigma, study=study, anatomy_to_patient=pose,
            )  # fmt: skip
        )
    for nod in nodules:
        nod.timepoints = [_nodule_truth(nod, t, tp.anatomy_to_patient) for t, tp in enumerate(tps)]
    # the voxelised label volume next to the exact one, so consumers see the discretisation
    for tp, counts in zip(tps, mask_counts):
        voxel = tp.volume.geometry.voxel_volume_mm3
        for k, nod in enumerate(nodules, start=1):
            nod.timepoints[tp.index]["mask_volume_mm3"] = round(float(counts.get(k, 0)) * voxel, 3)
    clock.lap("truth")
    return PhantomPatient(seed=seed, patient_id=patient["patient_id"], patient=patient, timepoints=tps, nodules=nodules, anatomy=an)


def write_patient(patient: PhantomPatient, out_dir: Path) -> Path:
    """Write ``OUT/<patient_id>/T0/CT000001.dcm``…, ``T1/``…, and ``truth.json``; return the patient dir."""
    root = Path(out_dir) / patient.patient_id
    root.mkdir(parents=True, exist_ok=True)
    for tp in patient.timepoints:
        D.write_slices(tp.volume.slice_datasets, tp.volume.hu, tp.study["pixel_variant"], root / tp.dir_name)
    (root / "truth.json").write_text(json.dumps(patient.truth(), indent=1) + "\n")
    return root
