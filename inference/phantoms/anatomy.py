"""A parametric chest: implicit tissue surfaces, a vessel tree and a texture field, in anatomy mm.

The anatomy frame is patient-fixed (x = patient left, y = posterior, z = superior, origin near the
carina), so a study is the same anatomy seen through a rigid transform ``p_LPS = R·u + t``. Tissue
regions are signed distance-like functions (negative inside) combined with max/min (CSG) and painted
back to front with a one-pixel linear ramp, which is a box-filtered partial-volume edge. Tubes
(pulmonary vessels, airways, aorta) are line segments with tapering radii, rendered separately in
their own bounding boxes (:mod:`.render`).

Values are in HU; the ranges follow typical adult chest CT (fat -110…-80, muscle 40…60, lung
parenchyma -880…-820 with a dependent-density gradient, cancellous bone 150…300, cortex 600…1000).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from . import _kernels as K


@dataclass(frozen=True)
class Tube:
    """A tapered cylinder segment in anatomy mm: radius r0 at p0 → r1 at p1."""

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    r0: float
    r1: float
    hu: float
    mode: str = "max"  # "max": never darkens (vessels); "paint": replace (airway lumen, aorta)
    kind: str = "vessel"


@dataclass
class Anatomy:
    """One patient's chest: a parameter vector (see ``_kernels.PARAM_NAMES``), tubes and texture."""

    p: np.ndarray  # float64 (len(PARAM_NAMES),)
    z_lo: float  # anatomy z range a scan should cover
    z_hi: float
    tubes: list[Tube] = field(default_factory=list)
    tex: np.ndarray = field(default_factory=lambda: np.zeros((2, 2, 2), dtype=np.float32))  # (z, y, x), unit std
    tex_origin: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (x, y, z) of tex[0, 0, 0]
    tex_step: float = 3.0

    def __post_init__(self) -> None:
        if self.p.shape != (len(K.PARAM_NAMES),):
            raise ValueError(f"anatomy parameter vector must have {len(K.PARAM_NAMES)} entries, got {self.p.shape}")

    def __getattr__(self, name: str) -> float:
        # named read access to the parameter vector: an.body_a, an.spine_y, ...
        if name in K.PARAM_NAMES:
            return float(self.__dict__["p"][K.PARAM_NAMES.index(name)])
        raise AttributeError(name)

    def lung_distance(self, pts: np.ndarray) -> np.ndarray:
        """Signed distance-like value to the lungs at ``(n, 3)`` anatomy points (negative inside)."""
        return K.lung_distance_points(self.p, np.ascontiguousarray(np.atleast_2d(pts), dtype=np.float64))

    def wall_distance(self, pts: np.ndarray) -> np.ndarray:
        """Signed distance to the chest wall's lung surface (costal pleura) at ``(n, 3)`` points."""
        return K.cavity_distance_points(self.p, np.ascontiguousarray(np.atleast_2d(pts), dtype=np.float64))

    def hu_at(self, pts: np.ndarray, ramp_mm: float = 0.7) -> np.ndarray:
        """Anatomy HU (no tubes, no noise) at ``(n, 3)`` anatomy points."""
        pts = np.ascontiguousarray(np.atleast_2d(pts), dtype=np.float64)
        return K.anatomy_hu_points(self.p, self.tex, self.tex_origin, 1.0 / self.tex_step, pts, ramp_mm)


def _random_anatomy(rng: np.random.Generator) -> Anatomy:
    body_a = rng.uniform(138.0, 172.0)
    body_b = body_a * rng.uniform(0.64, 0.76)
    fat_t = rng.uniform(8.0, 28.0)
    muscle_t = rng.uniform(9.0, 15.0)
    inner_b = body_b - fat_t - muscle_t
    apex_z = rng.uniform(100.0, 130.0)
    dome_z = -rng.uniform(140.0, 175.0)
    dome_h = rng.uniform(45.0, 65.0)
    heart_r = (rng.uniform(52.0, 64.0), rng.uniform(42.0, 52.0), rng.uniform(48.0, 58.0))
    heart_c = (rng.uniform(18.0, 32.0), -inner_b + heart_r[1] + rng.uniform(2.0, 10.0), dome_z + dome_h + heart_r[2] * 0.55)
    spine_r = rng.uniform(16.0, 20.0)
    spine_y = body_b - fat_t - muscle_t - spine_r - rng.uniform(28.0, 38.0)
    v = dict(
        body_a=body_a,
        body_b=body_b,
        back_flat=body_b * rng.uniform(0.86, 0.95),
        fat_t=fat_t,
        muscle_t=muscle_t,
        rib_t=rng.uniform(6.0, 8.5),
        rib_h=rng.uniform(9.0, 13.0),
        rib_period=rng.uniform(24.0, 30.0),
        rib_drop=rng.uniform(80.0, 120.0),
        rib_phase=rng.uniform(0.0, 30.0),
        med_w=rng.uniform(12.0, 22.0),
        apex_z=apex_z,
        apex_c=rng.uniform(55.0, 75.0),
        apex_k=rng.uniform(0.012, 0.02),
        dome_z=dome_z,
        dome_h=dome_h,
        dome_tilt=-rng.uniform(0.03, 0.08),
        heart_cx=heart_c[0], heart_cy=heart_c[1], heart_cz=heart_c[2],
        heart_rx=heart_r[0], heart_ry=heart_r[1], heart_rz=heart_r[2],
        spine_y=spine_y,
        spine_r=spine_r,
        disc_period=rng.uniform(26.0, 32.0),
        disc_h=rng.uniform(5.0, 8.0),
        sternum_z=dome_z + dome_h + rng.uniform(0.0, 20.0),
        hu_fat=rng.uniform(-110.0, -85.0),
        hu_muscle=rng.uniform(40.0, 60.0),
        hu_med=rng.uniform(-80.0, -40.0),
        hu_liver=rng.uniform(50.0, 65.0),
        hu_lung=rng.uniform(-875.0, -835.0),
        lung_gravity=rng.uniform(20.0, 60.0),
        lung_tex=rng.uniform(12.0, 28.0),
        hu_heart=rng.uniform(30.0, 50.0),
        hu_bone=rng.uniform(180.0, 280.0),
        hu_cortex=rng.uniform(650.0, 1000.0),
    )
    p = np.array([v[n] for n in K.PARAM_NAMES], dtype=np.float64)
    return Anatomy(p=p, z_lo=dome_z - 25.0, z_hi=apex_z + 25.0)


def _texture_grid(rng: np.random.Generator, an: Anatomy, step: float = 3.0) -> None:
    """Fill ``an.tex`` with a smooth (σ ≈ 4 mm) unit-variance random field over the body box."""
    lo = np.array([-an.body_a - 10.0, -an.body_b - 10.0, an.z_lo - 40.0])
    hi = np.array([an.body_a + 10.0, an.body_b + 10.0, an.z_hi + 40.0])
    n = np.ceil((hi - lo) / step).astype(int) + 1
    white = rng.standard_normal((2, n[2], n[1], n[0]), dtype=np.float32)
    fine = ndi.gaussian_filter(white[0], 1.0, mode="wrap", truncate=3.0)
    coarse = ndi.gaussian_filter(white[1], 2.5, mode="wrap", truncate=2.5)
    tex = fine / fine.std() + 0.7 * coarse / max(float(coarse.std()), 1e-6)
    an.tex = (tex / tex.std()).astype(np.float32)
    an.tex_origin = lo.astype(np.float64)
    an.tex_step = step


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _grow_tree(
    rng: np.random.Generator,
    an: Anatomy,
    root: np.ndarray,
    direction: np.ndarray,
    radius: float,
    hu: float,
    max_segments: int,
    airways: list[tuple[np.ndarray, np.ndarray, float, float]] | None = None,
) -> list[Tube]:
    """A branching, tapering vessel tree filling one lung region (breadth first, Murray's law).

    Every segment tapers; at its end it splits into a major and a minor child (radii from
    ``r³ = r₁³ + r₂³``) turned apart in a random plane, with a slight pull away from the root so that
    the tree spreads towards the pleura; branches stop near the pleura or below 0.5 mm radius. When
    ``airways`` is given, bronchi (lumen radius ≈ 0.8·r) run alongside segments of r ≥ 1.2 mm, as
    bronchi accompany pulmonary arteries.
    """
    d0 = _unit(direction)
    o0 = _unit(np.cross(d0, rng.standard_normal(3)))
    n_rows = 3 * max_segments
    uni = rng.random((n_rows, 6))
    nrm = rng.standard_normal((n_rows, 18))
    segs, air = K.grow_tree_kernel(
        an.p, np.asarray(root, dtype=np.float64), d0, o0, float(radius), int(max_segments), uni, nrm, airways is not None
    )
    if airways is not None:
        airways.extend((a[0:3].copy(), a[3:6].copy(), float(a[6]), float(a[7])) for a in air)
    return [Tube(tuple(map(float, s[0:3])), tuple(map(float, s[3:6])), float(s[6]), float(s[7]), hu, "max", "vessel") for s in segs]


def random_anatomy(rng: np.random.Generator, *, vessel_segments: int = 6000) -> Anatomy:
    """A random adult chest with texture, pulmonary vessel trees, airways and aorta."""
    an = _random_anatomy(rng)
    _texture_grid(rng, an)
    tubes: list[Tube] = []
    # trachea and main bronchi (air lumen in a soft-tissue wall)
    y_tr = an.spine_y - an.spine_r - rng.uniform(12.0, 20.0)
    carina = np.array([0.0, y_tr, 0.0])
    top = np.array([0.0, y_tr - 8.0, an.z_hi + 30.0])
    r_tr = rng.uniform(7.5, 10.0)
    hila = {s: np.array([s * (an.med_w + rng.uniform(12.0, 20.0)), y_tr + rng.uniform(-5.0, 10.0), -rng.uniform(15.0, 30.0)]) for s in (-1.0, 1.0)}
    airway = [(top, carina, r_tr, r_tr)] + [(carina, hila[s], r_tr * 0.75, r_tr * 0.6) for s in (-1.0, 1.0)]
    for p0, p1, a, b in airway:
        tubes.append(Tube(tuple(p0), tuple(p1), a + 1.8, b + 1.6, 30.0, "paint", "airway_wall"))
    for p0, p1, a, b in airway:
        tubes.append(Tube(tuple(p0), tuple(p1), a, b, -1000.0, "paint", "airway"))
    # aorta: ascending from the heart, arch, descending beside the spine
    r_ao = rng.uniform(11.0, 15.0)
    asc0 = np.array([an.heart_cx - 25.0, an.heart_cy + 10.0, an.heart_cz])
    arch_top = np.array([5.0, y_tr - 20.0, rng.uniform(25.0, 45.0)])
    desc0 = np.array([an.spine_r + r_ao * 0.6, an.spine_y - an.spine_r * 0.2, arch_top[2] - 10.0])
    desc1 = np.array([desc0[0] * 0.7, desc0[1] - 5.0, an.z_lo - 30.0])
    for p0, p1 in ((asc0, arch_top), (arch_top, desc0), (desc0, desc1)):
        tubes.append(Tube(tuple(p0), tuple(p1), r_ao, r_ao, 42.0, "paint", "aorta"))
    # pulmonary vessel trees from each hilum: arteries (with bronchi alongside) and veins
    airways: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    vessels: list[Tube] = []
    for s in (-1.0, 1.0):
        for k, (dz, hu) in enumerate(((0.0, 40.0), (-30.0, 35.0))):
            root = hila[s] + np.array([s * 4.0, 6.0 * k, dz])
            for d in ((s * 0.5, 0.1, 0.9), (s, 0.3, 0.1), (s, -0.6, 0.0), (s * 0.6, 0.3, -0.8), (s * 0.5, -0.4, -0.7)):
                vessels += _grow_tree(
                    rng, an, root, np.array(d), rng.uniform(3.5, 5.0), hu, vessel_segments // 20,
                    airways if k == 0 else None,
                )  # fmt: skip
    tubes += vessels
    # bronchi: all walls first, then all lumens, so a wall never covers another branch's lumen
    tubes += [Tube(tuple(a), tuple(b), r + w, (r + w) * 0.95, 25.0, "paint", "airway_wall") for a, b, r, w in airways]
    tubes += [Tube(tuple(a), tuple(b), r, r * 0.95, -1000.0, "paint", "airway") for a, b, r, w in airways]
    an.tubes = tubes
    return an
