"""Unit tests of the imaging core on small analytic volumes: registration, segmentation/measurement,
tracking arithmetic (CLINICAL.md), UIDs and annotation seeds."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from inference.registration import register_rigid, refine_local
from inference.tracking import match_nodules, mint_tracking_uid, volume_change_pct, volume_doubling_time
from inference.types import CTVolume, NoduleMeasurement, VolumeGeometry


def _rot(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = math.radians(deg_z), math.radians(deg_x)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rz @ rx


def chest(shape=(48, 80, 80), spacing=(4.0, 4.0, 5.0), pose: np.ndarray | None = None, nodules=(), seed=0,
          study_date=dt.date(2025, 1, 1), noise=15.0) -> CTVolume:
    """An analytic chest (body, two lungs, a few 'vessels' and blobs) sampled on a grid.

    ``pose`` (4×4) maps anatomy mm to this study's LPS; the grid is axis-aligned in LPS.
    ``nodules`` = [(center_anatomy_mm, diameter_mm, hu)].
    """
    pose = np.eye(4) if pose is None else pose
    nz, ny, nx = shape
    sx, sy, sz = spacing
    origin = np.array([-(nx - 1) * sx / 2, -(ny - 1) * sy / 2, -(nz - 1) * sz / 2])
    z, y, x = np.meshgrid(np.arange(nz) * sz, np.arange(ny) * sy, np.arange(nx) * sx, indexing="ij")
    lps = np.stack([x + origin[0], y + origin[1], z + origin[2]], -1)
    inv = np.linalg.inv(pose)
    a = lps @ inv[:3, :3].T + inv[:3, 3]  # anatomy coordinates of each voxel
    X, Y, Z = a[..., 0], a[..., 1], a[..., 2]
    hu = np.full(shape, -1000.0)
    hu[(X / 150) ** 2 + (Y / 105) ** 2 < 1] = 40.0
    for side in (-1, 1):
        hu[((X - side * 68) / 52) ** 2 + ((Y + 5) / 72) ** 2 + (Z / 100) ** 2 < 1] = -850.0
    hu[(X / 25) ** 2 + ((Y - 50) / 25) ** 2 < 1] = 300.0  # spine
    hu[((X - 10) / 40) ** 2 + ((Y + 20) / 35) ** 2 + ((Z + 30) / 40) ** 2 < 1] = 40.0  # heart
    for c, d, v in nodules:
        r = np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2)
        occ = np.clip((d / 2 - r) / 1.0 + 0.5, 0, 1)
        hu = hu * (1 - occ) + occ * v
    rng = np.random.default_rng(seed)
    hu = ndi.gaussian_filter(hu, 0.6) + rng.normal(0, noise, shape)
    geom = VolumeGeometry(origin=tuple(origin), spacing=spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), shape=shape)
    return CTVolume(hu=np.rint(hu).astype(np.int16), geometry=geom, study_instance_uid=f"1.2.826.0.1.{seed}",
                    series_instance_uid=f"1.2.826.0.2.{seed}", frame_of_reference_uid=f"1.2.826.0.3.{seed}",
                    sop_instance_uids=[], study_date=study_date)


def _pose(deg_z: float, deg_x: float, t) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = _rot(deg_z, deg_x)
    m[:3, 3] = t
    return m


def test_rigid_registration_recovers_repositioning() -> None:
    pose_prior = _pose(0, 0, (0, 0, 0))
    pose_cur = _pose(3.0, -2.0, (6.0, -4.0, 8.0))
    prior = chest(pose=pose_prior, seed=1)
    current = chest(pose=pose_cur, seed=2)
    tr = register_rigid(prior, current)
    # a point in anatomy maps to both studies; the transform must carry prior LPS → current LPS
    pts = np.array([[60.0, 10.0, 20.0], [-70.0, -20.0, -40.0], [0.0, 40.0, 0.0]])
    p_prior = pts @ pose_prior[:3, :3].T + pose_prior[:3, 3]
    p_cur = pts @ pose_cur[:3, :3].T + pose_cur[:3, 3]
    err = np.linalg.norm(tr.to_current(p_prior) - p_cur, axis=1)
    assert err.max() < 2.0, err  # 4–5 mm voxels: sub-voxel
    back = np.linalg.norm(tr.to_prior(p_cur) - p_prior, axis=1)
    assert back.max() < 2.0
    loc = refine_local(prior, current, tr, p_cur[0])
    assert np.linalg.norm(loc.to_current(p_prior[:1]) - p_cur[:1]) < 2.5


def test_local_refinement_recovers_a_large_residual_of_the_global_transform() -> None:
    """Breathing leaves local residuals beyond a gradient-descent capture range: the exhaustive
    correlation search finds them (up to max_shift_mm), and a correct global transform is kept."""
    from inference.registration import RigidTransform

    pose_prior = _pose(0, 0, (0, 0, 0))
    pose_cur = _pose(3.0, -2.0, (6.0, -4.0, 8.0))
    prior = chest(pose=pose_prior, seed=1)
    current = chest(pose=pose_cur, seed=2)
    tr = register_rigid(prior, current)
    pts = np.array([[60.0, 10.0, 20.0], [-70.0, -20.0, -40.0]])
    p_prior = pts @ pose_prior[:3, :3].T + pose_prior[:3, 3]
    p_cur = pts @ pose_cur[:3, :3].T + pose_cur[:3, 3]
    for residual in ([0.0, -12.0, 5.0], [14.0, 6.0, -4.0]):
        m = tr.current_to_prior.copy()
        m[:3, 3] += residual
        off = RigidTransform(m)
        for i in range(len(pts)):
            assert np.linalg.norm(off.to_current(p_prior[i]) - p_cur[i]) > 12.0
            loc = refine_local(prior, current, off, p_cur[i])
            # 4–5 mm voxels: within a voxel
            assert np.linalg.norm(loc.to_current(p_prior[i]) - p_cur[i]) < 3.0
    loc = refine_local(prior, current, tr, p_cur[0])
    assert np.linalg.norm(loc.to_current(p_prior[:1]) - p_cur[:1]) < 2.5


def test_ncc_search_finds_a_known_offset() -> None:
    from inference.registration import ncc_search

    rng = np.random.default_rng(0)
    moving = ndi.gaussian_filter(rng.normal(size=(30, 32, 34)), 1.5)
    # fixed is 10 voxels smaller along each axis: the centred position starts at (5, 5, 5)
    fixed = moving[5 + 2: 5 + 2 + 20, 5 - 3: 5 - 3 + 22, 5 + 1: 5 + 1 + 24]
    off, best, at_zero = ncc_search(fixed, moving)
    assert tuple(off) == (2, -3, 1)
    assert best == pytest.approx(1.0, abs=1e-6) and at_zero < best
    # a structureless fixed patch correlates with nothing
    off, best, _ = ncc_search(np.zeros((20, 22, 24)), moving)
    assert best == 0.0


def test_segmentation_volume_and_axes_of_a_sphere() -> None:
    from inference.lung import compute_lung_mask
    from inference.measure import measure
    from inference.segmentation import segment_nodule

    d = 10.0
    vol = chest(shape=(72, 160, 160), spacing=(2.0, 2.0, 2.5), nodules=[((60.0, 0.0, 10.0), d, 40.0)], seed=3,
                noise=10.0)
    lung = compute_lung_mask(vol)
    assert lung.stats.parenchyma_hu == pytest.approx(-850, abs=30)
    seg = segment_nodule(vol, lung, vol.geometry.lps_to_index(np.array([60.0, 0.0, 10.0])), radius_hint_mm=5)
    assert seg is not None
    m = measure(vol, seg)
    true_v = math.pi / 6 * d ** 3
    assert abs(m.volume_mm3 - true_v) / true_v < 0.10, m.volume_mm3
    assert m.mean_diameter_mm == pytest.approx(d, abs=2.0)
    assert m.short_axis_mm <= m.long_axis_mm
    assert m.consistency == "solid"
    np.testing.assert_allclose(m.center_mm, (60.0, 0.0, 10.0), atol=1.0)
    # nothing there → None (parenchyma only)
    assert segment_nodule(vol, lung, vol.geometry.lps_to_index(np.array([-70.0, -30.0, -20.0])), radius_hint_mm=4) is None


def _subsolid_with_vessel(core_mm: float, vessel_mm: float, gg_hu: float = -450.0) -> tuple[CTVolume, np.ndarray]:
    """A 16 mm ground-glass nodule (``gg_hu``; with a central solid core of ``core_mm`` when > 0), a
    straight vessel of ``vessel_mm`` (+40 HU, denser than the ground glass, as on CT) running through
    it when > 0; 1.5 mm voxels. Returns the volume and the nodule's centre (LPS)."""
    c = np.array((60.0, 0.0, 10.0))
    sp = (1.5, 1.5, 1.5)
    shape = (133, 213, 213)
    nods = [(tuple(c), 16.0, gg_hu)] + ([(tuple(c), core_mm, 40.0)] if core_mm else [])
    vol = chest(shape=shape, spacing=sp, nodules=nods, seed=3, noise=30.0)
    if vessel_mm:
        g = vol.geometry
        d = g.index_to_lps(np.indices(shape).reshape(3, -1).T).reshape(shape + (3,)) - c
        u = np.array([0.6, 0.8, 0.0])
        r = np.linalg.norm(d - (d @ u)[..., None] * u, axis=-1)
        occ = np.clip((vessel_mm / 2 - r) / 1.0 + 0.5, 0, 1) * (np.abs(d @ u) < 30)
        hu = vol.hu.astype(float)
        hu = np.maximum(hu, hu * (1 - occ) + occ * 40.0)
        vol = CTVolume(hu=np.rint(hu).astype(np.int16), geometry=g, study_instance_uid=vol.study_instance_uid,
                       series_instance_uid=vol.series_instance_uid,
                       frame_of_reference_uid=vol.frame_of_reference_uid, sop_instance_uids=[])
    return vol, c


@pytest.mark.parametrize("core_mm, vessel_mm", [(0.0, 0.0), (0.0, 3.0), (7.0, 0.0), (7.0, 3.0)])
def test_subsolid_consistency_and_solid_component(core_mm: float, vessel_mm: float) -> None:
    """Dense ground glass (−450 HU, above the parenchyma–tissue midpoint in places) is not a solid
    component, nor is a vessel running through it; a solid core is measured at its own size whether
    or not a vessel runs into it."""
    from inference.lung import compute_lung_mask
    from inference.measure import measure
    from inference.segmentation import segment_nodule

    vol, c = _subsolid_with_vessel(core_mm, vessel_mm)
    lung = compute_lung_mask(vol)
    seg = segment_nodule(vol, lung, vol.geometry.lps_to_index(c), radius_hint_mm=8)
    assert seg is not None
    m = measure(vol, seg)
    true_v = math.pi / 6 * 16.0 ** 3
    assert abs(m.volume_mm3 - true_v) / true_v < 0.10, m.volume_mm3
    if core_mm:
        assert m.consistency == "part_solid"
        core_v = math.pi / 6 * core_mm ** 3
        assert abs(seg.solid_volume_mm3 - core_v) / core_v < 0.25, seg.solid_volume_mm3
        assert m.solid_component_mm == pytest.approx(core_mm, abs=1.5)
    else:
        assert m.consistency == "ground_glass", (seg.solid_volume_mm3, m.solid_component_mm)
        assert seg.solid_volume_mm3 == 0.0


def _with_strands(nodule_hu: float, case: str) -> tuple[CTVolume, np.ndarray, float]:
    """A 12 mm nodule (``nodule_hu``) on 1.5 mm voxels with, for ``case``: "spicules", six strands
    of 2.4 mm radiating 5 mm beyond its surface; "vessel", a vessel of that width running through it
    across the whole neighbourhood. Returns the volume, the centre and the nodule's true volume
    (spicules included, the vessel not)."""
    c = np.array((60.0, 0.0, 10.0))
    shape = (133, 213, 213)
    d_mm, length, radius = 12.0, 5.0, 1.2
    vol = chest(shape=shape, spacing=(1.5, 1.5, 1.5), nodules=[(tuple(c), d_mm, nodule_hu)], seed=3, noise=20.0)
    g = vol.geometry
    d = g.index_to_lps(np.indices(shape).reshape(3, -1).T).reshape(shape + (3,)) - c
    hu = vol.hu.astype(float)
    rot = np.array([[0.8, 0.6, 0], [-0.6, 0.8, 0], [0, 0, 1]])  # not along the grid axes
    axes = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float) @ rot
    true_v = math.pi / 6 * d_mm ** 3
    strands = [(u, 0.0, d_mm / 2 + length, nodule_hu) for u in axes] if case == "spicules" else \
        [((axes[0] * 0.8 + axes[2] * 0.6), -40.0, 40.0, 40.0)]
    for u, t0, t1, value in strands:
        t = d @ u
        r = np.linalg.norm(d - t[..., None] * u, axis=-1)
        occ = np.clip((radius - r) / 1.0 + 0.5, 0, 1) * ((t > t0) & (t < t1))
        hu = np.maximum(hu, hu * (1 - occ) + occ * value)
    if case == "spicules":
        true_v += len(axes) * math.pi * radius ** 2 * length
    vol = CTVolume(hu=np.rint(hu).astype(np.int16), geometry=g, study_instance_uid=vol.study_instance_uid,
                   series_instance_uid=vol.series_instance_uid,
                   frame_of_reference_uid=vol.frame_of_reference_uid, sop_instance_uids=[])
    return vol, c, true_v


@pytest.mark.parametrize("nodule_hu, case", [(40.0, "spicules"), (-500.0, "spicules"), (40.0, "vessel")])
def test_spicules_are_measured_vessels_are_not(nodule_hu: float, case: str) -> None:
    """Spicules longer than the vessel-cutting ball, ending near the nodule, are part of its volume
    (main lost them: −10 % solid, −16 % ground glass); a vessel running through it is cut off."""
    from inference.lung import compute_lung_mask
    from inference.measure import measure
    from inference.segmentation import segment_nodule

    vol, c, true_v = _with_strands(nodule_hu, case)
    lung = compute_lung_mask(vol)
    seg = segment_nodule(vol, lung, vol.geometry.lps_to_index(c), radius_hint_mm=6.0)
    assert seg is not None
    m = measure(vol, seg)
    assert abs(m.volume_mm3 - true_v) / true_v < 0.05, (m.volume_mm3, true_v)


def test_vdt_and_volume_change_follow_clinical_md() -> None:
    assert volume_doubling_time(100.0, 200.0, 300) == pytest.approx(300.0)
    assert volume_doubling_time(100.0, 100.0, 300) is None  # no growth
    assert volume_doubling_time(200.0, 100.0, 300) is None  # decreasing: no VDT
    assert volume_doubling_time(100.0, 200.0, None) is None
    assert volume_change_pct(100.0, 125.0) == pytest.approx(25.0)


def _m(center, v) -> NoduleMeasurement:
    d = (6 * v / math.pi) ** (1 / 3)
    return NoduleMeasurement(center_mm=center, volume_mm3=v, long_axis_mm=d, short_axis_mm=d, mean_diameter_mm=d,
                             solid_component_mm=d, mean_hu=0.0, consistency="solid",
                             long_axis_endpoints_mm=(center, center), long_axis_slice=0,
                             mask=np.ones((1, 1, 1), bool), mask_offset=(0, 0, 0))


def test_matching_is_one_to_one_and_gated() -> None:
    prior = [_m((0, 0, 0), 100), _m((30, 0, 0), 500), _m((100, 100, 100), 50)]
    current = [_m((31, 1, 0), 700), _m((1, 0, 1), 150)]
    mapped = np.array([p.center_mm for p in prior], float)
    matches = {(m.prior_index, m.current_index): m for m in match_nodules(prior, mapped, current)}
    assert set(matches) == {(0, 1), (1, 0)}
    assert all(0.5 < m.confidence <= 1.0 for m in matches.values())


def test_tracking_uid_is_deterministic_and_valid() -> None:
    a = mint_tracking_uid("1.2.3", (10.2, -4.0, 7.7))
    assert a == mint_tracking_uid("1.2.3", (10.4, -4.1, 7.6))
    assert a != mint_tracking_uid("1.2.4", (10.2, -4.0, 7.7))
    assert len(a) <= 64 and all(p.isdigit() for p in a.split("."))


def test_matching_is_by_position_size_never_vetoes() -> None:
    # a nodule that grew 35× (5 mm → 16 mm) with nothing else near it is the same nodule
    prior = [_m((0, 0, 0), 65.0), _m((80, 0, 0), 300.0)]
    current = [_m((2, 1, 0), 35 * 65.0), _m((81, 0, 1), 310.0)]
    mapped = np.array([p.center_mm for p in prior], float)
    matches = {(m.prior_index, m.current_index): m for m in match_nodules(prior, mapped, current)}
    assert set(matches) == {(0, 0), (1, 1)}
    assert matches[(0, 0)].confidence > 0.8  # unambiguous: size change does not lower confidence
    # two candidates in the gate: the nearer wins and the confidence says it was contested
    current2 = [_m((3, 0, 0), 70.0), _m((9, 0, 0), 66.0)]
    m2 = match_nodules(prior[:1], mapped[:1], current2)
    assert [(m.prior_index, m.current_index) for m in m2] == [(0, 0)]
    assert m2[0].confidence < 0.6


def test_fast_distance_transform_and_ball_morphology_match_scipy() -> None:
    import scipy.ndimage as ndi

    from inference.morphology import ball_close, ball_open, edt

    rng = np.random.default_rng(3)
    mask = ndi.gaussian_filter(rng.standard_normal((30, 40, 40)), 2.5) > 0.05
    sampling = (1.25, 0.7, 0.7)
    np.testing.assert_allclose(edt(mask, sampling), ndi.distance_transform_edt(mask, sampling=sampling), atol=1e-4)
    full = np.ones((5, 6, 7), bool)
    # all inside: the distance to just outside the array (SciPy's answer is not defined for this case)
    d_full = edt(full, (1.0, 1.0, 1.0))
    assert d_full[0, 0, 0] == pytest.approx(1.0) and d_full[2, 2, 3] == pytest.approx(3.0)
    opened, closed = ball_open(mask, 2.0, sampling), ball_close(mask, 2.0, sampling)
    assert not (opened & ~mask).any() and not (mask & ~closed).any()  # anti-extensive / extensive
    # a thin tube does not survive an opening wider than it; a ball does
    zz, yy, xx = np.indices((30, 40, 40)) * np.asarray(sampling)[:, None, None, None]
    ball = (zz - 18) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 <= 6.0 ** 2
    tube = ((yy - 14) ** 2 + (xx - 14) ** 2 <= 1.2 ** 2)
    out = ball_open(ball | tube, 2.0, sampling)
    assert out[14, 20, 20] and not out[2, 20, 20]


def test_thick_sections_are_analysed_with_a_note() -> None:
    from inference.analysis import THIN_SECTION_MM, analyze_pair
    from inference.phantoms import generate_patient

    vol = generate_patient(7, timepoints=1, rows=96, slices=48).timepoints[0].volume
    assert vol.geometry.spacing[2] > THIN_SECTION_MM
    notes = analyze_pair(None, vol).notes
    assert any("current series slice spacing" in n and "thin sections" in n for n in notes), notes


def test_distance_transform_of_the_high_end_block_is_bitwise_the_whole_arrays() -> None:
    """``edt(upto=...)`` (segmentation transforms only the block holding the voxels it reads) gives
    the whole array's float32 values bit for bit where the nearest background lies in the block, and
    the same threshold decisions within the margin's reach of the other voxels."""
    from inference.morphology import edt, upper_end

    rng = np.random.default_rng(11)
    for trial in range(6):
        shape = (int(rng.integers(20, 40)), int(rng.integers(30, 60)), int(rng.integers(30, 60)))
        sampling = (float(rng.uniform(0.6, 2.5)), float(rng.uniform(0.5, 1.5)), float(rng.uniform(0.5, 1.5)))
        blobs = ndi.gaussian_filter(rng.standard_normal(shape), 2.0)
        region = np.zeros(shape, bool)
        c = [n // 2 for n in shape]
        region[c[0] - 5: c[0] + 4, c[1] - 8: c[1] + 6, c[2] - 7: c[2] + 8] = True
        # background only inside the region (as the solid part of a nodule): exact everywhere in the block
        solid = region & (blobs > 0.1)
        solid[tuple(c)] = True
        hi = upper_end(region)
        assert all(h < n for h, n in zip(hi, shape))
        got, want = edt(~solid, sampling, upto=hi), edt(~solid, sampling)
        blk = tuple(slice(0, h) for h in hi)
        assert np.array_equal(got[blk], want[blk]), trial
        outside = np.ones(shape, bool)
        outside[blk] = False
        assert not got[outside].any()
        # background anywhere (a lung envelope): the decision "farther than t" on the region is the same
        envelope = blobs > -0.3
        envelope[c[0] + 5] = False  # a wall just beyond the region's block, within t of its last slice
        t = max(sampling[1], sampling[2], 2.0 * sampling[0])
        reach = tuple(int(np.ceil(t / s)) + 1 for s in sampling)
        got = edt(envelope, sampling, upto=upper_end(region, reach)) > t
        want = edt(envelope, sampling) > t
        assert np.array_equal(got[region], want[region]), trial


def test_fill_holes_and_block_mean_are_scipys_and_the_reshaped_mean_bit_for_bit() -> None:
    """The faster hole filling (background labelled once) and block averaging (int32 sums over
    strided views, a slab at a time) give exactly the results of the straightforward versions."""
    from inference.morphology import fill_holes, repeat_into
    from inference.registration import block_mean

    rng = np.random.default_rng(5)
    for trial in range(6):
        shape = (int(rng.integers(8, 30)), int(rng.integers(20, 50)), int(rng.integers(20, 50)))
        mask = ndi.gaussian_filter(rng.standard_normal(shape), 1.5) > float(rng.uniform(-0.2, 0.3))
        assert np.array_equal(fill_holes(mask), ndi.binary_fill_holes(mask)), trial
        per_slice = np.stack([ndi.binary_fill_holes(m) for m in mask])
        assert np.array_equal(fill_holes(mask, planar=True), per_slice), trial
        # holes of more than 20 voxels in a slice stay open
        small_holes = per_slice.copy()
        for k, m in enumerate(mask):
            holes, n = ndi.label(per_slice[k] & ~m)
            for lab in range(1, n + 1):
                if (holes == lab).sum() > 20:
                    small_holes[k][holes == lab] = False
        assert np.array_equal(fill_holes(mask, planar=True, max_hole_voxels=20), small_holes), trial
        f = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        small = mask[::f[0], ::f[1], ::f[2]][: shape[0] // f[0], : shape[1] // f[1], : shape[2] // f[2]]
        want = np.zeros(shape, bool)
        up = small.repeat(f[0], 0).repeat(f[1], 1).repeat(f[2], 2)
        want[: up.shape[0], : up.shape[1], : up.shape[2]] = up
        assert np.array_equal(repeat_into(small, f, shape), want), trial
    assert fill_holes(np.ones((4, 5, 6), bool)).all()

    def reshaped_mean(hu: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
        fz, fy, fx = factors
        nz, ny, nx = (s // k for s, k in zip(hu.shape, factors))
        out = np.zeros((nz, ny, nx), dtype=np.float32)
        for k in range(fz):
            part = hu[k: nz * fz: fz, : ny * fy, : nx * fx].astype(np.float32)
            out += part.reshape(nz, ny, fy, nx, fx).mean(axis=(2, 4))
        return out / fz

    hu = rng.integers(-1024, 3071, size=(41, 70, 66), dtype=np.int16)
    extreme = rng.integers(-32768, 32767, size=(19, 45, 47), dtype=np.int16)
    for f in [(1, 2, 2), (2, 4, 4), (4, 6, 6), (3, 5, 7), (1, 1, 3), (2, 22, 23)]:
        for a in (hu, extreme):
            assert block_mean(a, f).tobytes() == reshaped_mean(a, f).tobytes(), f


def test_detection_on_a_pool_gives_the_same_candidates() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from inference.detection import detect_nodules
    from inference.lung import compute_lung_mask
    from inference.phantoms import generate_patient

    vol = generate_patient(0, timepoints=1, rows=128).timepoints[0].volume
    lung = compute_lung_mask(vol)
    serial = detect_nodules(vol, lung)
    with ThreadPoolExecutor(max_workers=2) as pool:
        pooled = detect_nodules(vol, lung, executor=pool)
    assert serial, "the phantom should have at least one detection"
    assert [(c.segmentation.peak_index, c.segmentation.volume_mm3) for c in serial] == \
        [(c.segmentation.peak_index, c.segmentation.volume_mm3) for c in pooled]
    assert all(np.array_equal(a.segmentation.mask, b.segmentation.mask) for a, b in zip(serial, pooled))
