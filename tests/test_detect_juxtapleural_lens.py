"""Detection of juxtapleural nodules that the pleura has flattened into a lens.

Seen on development phantoms at 512² (seeds 4, 22, 30: juxtapleural nodules of 10–19 mm, missed at
one or both time points): a nodule against the wall is elongated – its smallest axis, across the
pleura, is much shorter than the other two – and the lung envelope halves its Hessian sphericity, so
the tube rule (elongation > 1.75 with a weak Hessian) took it for a vessel. A vessel is long in one
direction, a lens in two: :func:`inference.shape.is_lens_at_wall` tells them apart by the ratio of
the largest to the middle principal axis.
"""

from __future__ import annotations

import numpy as np
import pytest

from inference.types import CTVolume
from tests.test_measure_units import chest

SPACING = (0.8, 0.8, 2.5)  # x, y, z mm: thick slices, as the phantoms that showed it
SHAPE = (32, 280, 400)  # z, y, x: the whole chest in-plane (the lung mask needs both lungs enclosed)
WALL_X = 120.0  # the right lung's lateral pleura at y = -5, z = 0 (the chest's lung ellipsoid)


def _scene(draw, seed: int) -> tuple[CTVolume, float]:
    """The analytic chest with ``draw(lps) -> (occupancy, hu)`` painted where it is lung, then
    noise. Returns the volume and the painted volume in mm³ (inside the lung)."""
    base = chest(shape=SHAPE, spacing=SPACING, nodules=[], seed=seed, noise=0.0)
    g = base.geometry
    lps = g.index_to_lps(np.indices(SHAPE).reshape(3, -1).T).reshape(SHAPE + (3,))
    occ, value = draw(lps)
    hu = base.hu.astype(float)
    lung = hu < -600
    hu = np.where(lung, hu * (1 - occ) + occ * value, hu)
    hu = hu + np.random.default_rng(seed).normal(0.0, 25.0, SHAPE)
    vol = CTVolume(hu=np.rint(hu).astype(np.int16), geometry=g, study_instance_uid=base.study_instance_uid,
                   series_instance_uid=base.series_instance_uid,
                   frame_of_reference_uid=base.frame_of_reference_uid, sop_instance_uids=[])
    return vol, float((occ * lung).sum() * np.prod(SPACING))


def _lens(semi_axes: tuple[float, float, float], hu: float, sink_mm: float = 1.5):
    """A solid ellipsoid (semi-axes x, y, z in mm; x across the pleura) sunk ``sink_mm`` into the wall."""
    centre = np.array([WALL_X - semi_axes[0] + sink_mm, -5.0, 0.0])

    def draw(lps):
        r = np.linalg.norm((lps - centre) / np.asarray(semi_axes), axis=-1)
        return np.clip((1 - r) * min(semi_axes) / 1.0 + 0.5, 0, 1), hu  # ~1 mm partial-volume edge
    return draw, centre


def _tube_along_wall(diameter_mm: float, axis: str):
    """A vessel (+40 HU) lying against the pleura, along z (through the volume) or y (50 mm long)."""
    centre = np.array([WALL_X - diameter_mm / 2 + 1.0, -5.0, 0.0])

    def draw(lps):
        d = lps - centre
        across = np.hypot(d[..., 0], d[..., 2]) if axis == "y" else np.hypot(d[..., 0], d[..., 1])
        occ = np.clip((diameter_mm / 2 - across) / 1.0 + 0.5, 0, 1)
        if axis == "y":
            occ = occ * (np.abs(d[..., 1]) < 25.0)
        return occ, 40.0
    return draw, centre


def _detect(vol):
    from inference.detection import detect_nodules
    from inference.lung import compute_lung_mask

    return detect_nodules(vol, compute_lung_mask(vol))


@pytest.mark.parametrize(("semi_axes", "seed"), [((6.5, 9.0, 9.0), 1), ((5.5, 8.0, 8.0), 3)])
def test_solid_nodule_flattened_against_the_pleura_is_detected(semi_axes, seed: int) -> None:
    draw, centre = _lens(semi_axes, 30.0)
    vol, true_v = _scene(draw, seed)
    found = _detect(vol)
    assert found, "the lens-shaped juxtapleural nodule was not detected"
    best = min(found, key=lambda c: float(np.linalg.norm(
        vol.geometry.index_to_lps(np.asarray(c.segmentation.peak_index, float)) - centre)))
    dist = float(np.linalg.norm(vol.geometry.index_to_lps(np.asarray(best.segmentation.peak_index, float)) - centre))
    assert dist <= semi_axes[1], f"nearest detection {dist:.1f} mm from the nodule"
    # the base, where the lens meets the pleura at an acute angle, is partly outside the lung
    # envelope: measured low, but the nodule is found and roughly measured
    assert abs(best.segmentation.volume_mm3 - true_v) <= 0.3 * true_v, (best.segmentation.volume_mm3, true_v)
    assert best.features["prolateness"] <= 1.3 < best.features["elongation"]
    assert len(found) == 1, f"{len(found)} detections"


@pytest.mark.parametrize(("diameter_mm", "axis"), [(5.0, "z"), (8.0, "z"), (8.0, "y")])
def test_a_vessel_along_the_pleura_is_not_detected(diameter_mm: float, axis: str) -> None:
    """Control: a tube against the wall is elongated and at the wall too, but long, not flat."""
    draw, _ = _tube_along_wall(diameter_mm, axis)
    vol, _ = _scene(draw, 7)
    assert _detect(vol) == []
