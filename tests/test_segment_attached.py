"""Segmentation of subsolid nodules that touch a vessel denser or thicker than themselves.

Two failures seen on held-out phantoms (perivascular nodules of 6–10 mm), each reproduced here on an
analytic chest with one nodule and one straight vessel, seeded at the nodule's centre as the tracker
seeds it (base code: +170 to +790 % volume, or only the solid core):

* A solid vessel appears wider than it is at the low threshold the region is grown at, so a 3 mm
  vessel touching a 6–7 mm ground-glass nodule survived the opening sized to the nodule and the mask
  ran along it. For a ground-glass nodule the opening is now sized and applied on the ground glass
  alone (:func:`inference.segmentation._depth_without_solid_neighbours`).
* A part-solid nodule on a vessel thicker than itself survived the opening joined to it; the
  ground-glass test then saw no ground-glass layer and only the solid core was kept. The nodule is
  now cut off at the neck of the inscribed radius between the two
  (:func:`inference.segmentation._thicker_neighbour_split`).
"""

from __future__ import annotations

import numpy as np
import pytest

from inference.types import CTVolume
from tests.test_measure_units import chest

SPACING = (1.0, 1.0, 1.25)  # x, y, z in mm
SHAPE = (64, 224, 320)  # z, y, x: the whole chest in-plane (the lung mask needs both lungs enclosed)
CENTRE = np.array((70.0, -5.0, 0.0))  # LPS mm: inside the lung at X > 0, away from the pleura


def _scene(nodule_mm: float, nodule_hu: float, vessel_mm: float, gap_mm: float,
           seed: int, core_mm: float = 0.0) -> tuple[CTVolume, float]:
    """A ground-glass nodule at :data:`CENTRE` and a solid vessel (+40 HU) along z whose surface is
    ``gap_mm`` from the nodule's (negative: they overlap). Partial-volume edges (1 mm ramps), then
    the chest's blur and noise. Returns the volume and the nodule's true volume."""
    base = chest(shape=SHAPE, spacing=SPACING, nodules=[], seed=seed, noise=0.0)
    g = base.geometry
    lps = g.index_to_lps(np.indices(SHAPE).reshape(3, -1).T).reshape(SHAPE + (3,))
    d = lps - CENTRE
    r = np.linalg.norm(d, axis=-1)
    occ_n = np.clip((nodule_mm / 2 - r) / 1.0 + 0.5, 0, 1)
    axis_x = nodule_mm / 2 + gap_mm + vessel_mm / 2  # vessel axis: parallel to z, offset in x
    rv = np.hypot(d[..., 0] - axis_x, d[..., 1])
    occ_v = np.clip((vessel_mm / 2 - rv) / 1.0 + 0.5, 0, 1)
    hu = base.hu.astype(float)
    lung = hu < -600
    hu = np.where(lung, hu * (1 - occ_n) + occ_n * nodule_hu, hu)
    if core_mm > 0:  # a solid component (+30 HU) at the centre: a part-solid nodule
        occ_c = np.clip((core_mm / 2 - r) / 1.0 + 0.5, 0, 1)
        hu = np.where(lung, hu * (1 - occ_c) + occ_c * 30.0, hu)
    hu = np.where(lung, np.maximum(hu, hu * (1 - occ_v) + occ_v * 40.0), hu)
    return with_noise(base, hu, seed), float(occ_n.sum() * np.prod(SPACING))


def with_noise(base: CTVolume, hu: np.ndarray, seed: int) -> CTVolume:
    """``hu`` (float) with 25 HU of white noise, rounded to int16 on ``base``'s geometry and UIDs."""
    rng = np.random.default_rng(seed)
    hu = hu + rng.normal(0.0, 25.0, hu.shape)
    return CTVolume(hu=np.rint(hu).astype(np.int16), geometry=base.geometry, study_instance_uid=base.study_instance_uid,
                    series_instance_uid=base.series_instance_uid,
                    frame_of_reference_uid=base.frame_of_reference_uid, sop_instance_uids=[])


def _segment(vol: CTVolume, radius_mm: float, split_far: bool = False, at: np.ndarray = CENTRE):
    """The nodule segmented from a seed at ``at`` (LPS mm; the nodule's centre unless given)."""
    from inference.lung import compute_lung_mask
    from inference.segmentation import segment_nodule

    lung = compute_lung_mask(vol)
    return segment_nodule(vol, lung, vol.geometry.lps_to_index(at), radius_hint_mm=radius_mm,
                          split_far=split_far)


def _extent_z_mm(seg) -> float:
    return float(seg.mask.any(axis=(1, 2)).sum() * SPACING[2])


def _centroid_mm(vol: CTVolume, seg) -> np.ndarray:
    idx = np.argwhere(seg.mask).mean(axis=0) + np.asarray(seg.offset)
    return vol.geometry.index_to_lps(idx)


@pytest.mark.parametrize(("nodule_mm", "nodule_hu", "gap_mm", "seed"),
                         [(7.0, -550.0, 0.0, 1), (6.0, -600.0, 0.5, 2)])
def test_ground_glass_nodule_touching_a_thin_solid_vessel_is_not_grown_along_it(
        nodule_mm: float, nodule_hu: float, gap_mm: float, seed: int) -> None:
    """A 3 mm solid vessel along z touching the nodule: the mask stays on the nodule (base code:
    +173 % and +275 %, 22 mm along the vessel)."""
    vol, true_v = _scene(nodule_mm, nodule_hu, vessel_mm=3.0, gap_mm=gap_mm, seed=seed)
    seg = _segment(vol, radius_mm=nodule_mm / 2)
    assert seg is not None
    assert seg.nodule_hu < seg.solid_threshold_hu, "ground glass, not the vessel's density"
    assert _extent_z_mm(seg) <= nodule_mm + 2 * SPACING[2] + 0.01, _extent_z_mm(seg)
    assert np.linalg.norm(_centroid_mm(vol, seg) - CENTRE) < 1.0, _centroid_mm(vol, seg)
    assert abs(seg.volume_mm3 - true_v) / true_v < 0.1, (seg.volume_mm3, true_v)


def test_ground_glass_nodule_touching_a_thicker_vessel_is_not_grown_along_it() -> None:
    """A 9 mm ground-glass nodule touching a 12 mm vessel (base code: +705 %)."""
    vol, true_v = _scene(nodule_mm=9.0, nodule_hu=-550.0, vessel_mm=12.0, gap_mm=0.0, seed=1)
    seg = _segment(vol, radius_mm=4.5)
    assert seg is not None
    assert _extent_z_mm(seg) <= 9.0 + 2 * SPACING[2] + 0.01, _extent_z_mm(seg)
    assert abs(seg.volume_mm3 - true_v) / true_v < 0.1, (seg.volume_mm3, true_v)


@pytest.mark.parametrize("seed", [1, 2])
def test_part_solid_nodule_on_a_thicker_vessel_is_cut_off_at_the_neck(seed: int) -> None:
    """A 10 mm part-solid nodule (4 mm solid core) touching a 12 mm vessel: measured with its ground
    glass (base code: the solid core alone, −79 %)."""
    vol, true_v = _scene(nodule_mm=10.0, nodule_hu=-550.0, vessel_mm=12.0, gap_mm=0.0, seed=seed,
                         core_mm=4.0)
    seg = _segment(vol, radius_mm=5.0)
    assert seg is not None
    assert seg.nodule_hu < seg.solid_threshold_hu, "the ground-glass level sets the boundary"
    assert seg.solid_volume_mm3 > 0, "the solid core is still measured"
    assert _extent_z_mm(seg) <= 10.0 + 2 * SPACING[2] + 0.01, _extent_z_mm(seg)
    assert abs(seg.volume_mm3 - true_v) / true_v < 0.15, (seg.volume_mm3, true_v)


def test_a_nodule_apart_from_the_vessel_is_unchanged_by_it() -> None:
    """Control: a nodule 4 mm from the thick vessel is measured as if alone."""
    vol, true_v = _scene(nodule_mm=9.0, nodule_hu=-550.0, vessel_mm=10.0, gap_mm=4.0, seed=3)
    seg = _segment(vol, radius_mm=4.5)
    assert seg is not None
    assert abs(seg.volume_mm3 - true_v) / true_v < 0.05, (seg.volume_mm3, true_v)


@pytest.mark.parametrize(("nodule_mm", "nodule_hu", "core_mm", "vessel_mm", "gap_mm", "seed"), [
    (6.0, 30.0, 0.0, 4.0, 0.0, 7),  # solid (base code: +253 %)
    (6.0, 30.0, 0.0, 4.0, -1.0, 8),  # solid, overlapping the vessel (+247 %)
    (6.0, -550.0, 2.4, 4.0, 0.0, 9),  # part-solid (its solid core alone: −71 %)
    (9.0, -550.0, 0.0, 8.0, -1.0, 7),  # ground glass overlapping a vessel nearly as thick (+947 %)
])
def test_nodule_on_a_vessel_about_as_thick_is_cut_off_where_the_vessel_leaves(
        nodule_mm: float, nodule_hu: float, core_mm: float, vessel_mm: float, gap_mm: float, seed: int) -> None:
    """The vessel-cutting opening is sized to the nodule (about 0.6 of its inscribed radius), so a
    vessel more than ~0.6 times as thick survives it and the mask runs along it. The nodule is now
    cut off at the level of the inscribed radius where it parts from what reaches far beyond it
    (:func:`inference.segmentation._far_neighbour_split`), for a seeded nodule (as the tracker and
    annotations seed it)."""
    vol, true_v = _scene(nodule_mm, nodule_hu, vessel_mm, gap_mm, seed, core_mm=core_mm)
    seg = _segment(vol, radius_mm=nodule_mm / 2, split_far=True)
    assert seg is not None
    assert _extent_z_mm(seg) <= nodule_mm + 2 * SPACING[2] + 0.01, _extent_z_mm(seg)
    assert abs(seg.volume_mm3 - true_v) / true_v < 0.15, (seg.volume_mm3, true_v)


def test_ground_glass_nodule_seeded_off_centre_towards_its_vessel_is_not_grown_along_it() -> None:
    """The detector's centre of a ground-glass nodule touching a solid vessel can lie a voxel or so
    off the nodule's, towards the vessel, so that a few of the vessel's voxels fall within half the
    nodule's radius of it. That is not a solid component (the nodule is not part-solid): the opening
    is still sized on the ground glass alone (base code: +173 %, the mask 22.5 mm along the vessel;
    seeded at the nodule's centre, where no vessel voxel is that near, both give +3.4 %)."""
    nodule_mm = 7.0
    vol, true_v = _scene(nodule_mm, -550.0, vessel_mm=3.0, gap_mm=0.0, seed=1)
    # 2 mm towards the vessel (it lies towards +x)
    seg = _segment(vol, radius_mm=nodule_mm / 2, at=CENTRE + np.array([2.0, 0.0, 0.0]))
    assert seg is not None
    assert seg.nodule_hu < seg.solid_threshold_hu, "ground glass, not the vessel's density"
    assert _extent_z_mm(seg) <= nodule_mm + 2 * SPACING[2] + 0.01, _extent_z_mm(seg)
    assert abs(seg.volume_mm3 - true_v) / true_v < 0.15, (seg.volume_mm3, true_v)
