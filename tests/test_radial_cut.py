"""The radial vessel cut (:mod:`inference.radial`) on analytic masks: a ball keeps its shape, vessel
spokes as thick as half the ball are cut at its surface, a vessel crossing a ground-glass ball is
kept within the ball, and a vessel piece seen from its axis is not made a ball."""

from __future__ import annotations

import numpy as np
import pytest

from inference.radial import radial_cut, spherical_closing, spherical_opening

SAMPLING = (1.25, 0.7, 0.7)  # z, y, x mm: anisotropic, as CT is
SHAPE = (40, 72, 72)
CENTRE = np.array([20.0, 36.0, 36.0])


def _mm() -> np.ndarray:
    """Offsets (mm) of every voxel from :data:`CENTRE`, shape (z, y, x, 3)."""
    return (np.indices(SHAPE).transpose(1, 2, 3, 0) - CENTRE) * np.asarray(SAMPLING)


def _ball(radius_mm: float) -> np.ndarray:
    return np.linalg.norm(_mm(), axis=-1) <= radius_mm


def _tube(direction: tuple[float, float, float], radius_mm: float, through: tuple[float, float, float] = (0, 0, 0)
          ) -> np.ndarray:
    """A straight infinite tube (z, y, x direction) through ``through`` (mm from the centre)."""
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    d = _mm() - np.asarray(through, float)
    along = d @ u
    return np.linalg.norm(d - along[..., None] * u, axis=-1) <= radius_mm


def _volume(mask: np.ndarray) -> float:
    return float(mask.sum() * np.prod(SAMPLING))


def test_a_ball_is_kept_whole() -> None:
    ball = _ball(5.0)
    cut = radial_cut(ball, CENTRE, SAMPLING, 12.0)
    assert np.array_equal(cut, ball)


def test_an_ellipsoid_keeps_nearly_all_of_its_volume() -> None:
    """Smooth elongation (axes 6 : 4 : 4 mm) is not a spoke; the cone trims its tips a little only."""
    m = _mm()
    ellipsoid = (m[..., 0] / 4.0) ** 2 + (m[..., 1] / 6.0) ** 2 + (m[..., 2] / 4.0) ** 2 <= 1.0
    cut = radial_cut(ellipsoid, CENTRE, SAMPLING, 14.0)
    assert _volume(cut) >= 0.93 * _volume(ellipsoid)


@pytest.mark.parametrize("vessel_radius_mm", [1.0, 1.5, 2.0])
def test_vessels_through_a_small_nodule_are_cut_at_its_surface(vessel_radius_mm: float) -> None:
    """A 8 mm nodule with two vessels (up to half its diameter) through it, one along z, one oblique:
    the opening of the segmentation cannot cut a vessel this thick; the radial cut leaves the ball
    plus at most a short stub per vessel end."""
    ball = _ball(4.0)
    region = ball | _tube((1, 0, 0), vessel_radius_mm) | _tube((0, 1, 1), vessel_radius_mm, through=(0, 0, 1.0))
    cut = radial_cut(region, CENTRE, SAMPLING, 14.0)
    assert (cut >= ball).all(), "the nodule itself is kept"
    stubs = _volume(cut & ~ball)
    # four vessel ends, each at most ~1.5 voxel-lengths beyond the surface
    assert stubs <= 4 * np.pi * vessel_radius_mm ** 2 * 2.0, f"{stubs:.0f} mm³ of vessel kept"
    assert _volume(region & ~ball) > 5 * stubs  # (the vessels in the region are far more than that)


def test_a_vessel_crossing_ground_glass_stops_the_rays_but_not_the_ball() -> None:
    """Ground glass with a solid vessel through it off-centre: with the vessel as ``stop``, the rays
    stop at it, and the shadow behind it is filled back by the closing on the sphere (after the
    opening)."""
    ball = _ball(5.0)
    vessel = _tube((1, 0, 0), 1.2, through=(0, 2.5, 0))
    region = ball | vessel
    cut = radial_cut(region, CENTRE, SAMPLING, 14.0, stop=vessel)
    truth = ball  # the vessel's part inside the ball belongs to the nodule's boundary
    assert abs(_volume(cut) - _volume(truth)) <= 0.08 * _volume(truth)
    # beyond the ball, at most a stub at each end (the tolerance): not the vessel
    assert _volume(cut & vessel & ~ball) <= 2 * np.pi * 1.2 ** 2 * 2.0


def test_a_vessel_piece_seen_from_its_axis_is_not_a_ball() -> None:
    """Centred on a straight vessel, the cut leaves a short piece of it, longer than it is wide
    (the segmentation rejects such a piece by its prolateness)."""
    vessel = _tube((0, 1, 0), 2.0)
    cut = radial_cut(vessel, CENTRE, SAMPLING, 14.0)
    pts = np.argwhere(cut) * np.asarray(SAMPLING)
    ev = np.linalg.eigvalsh(np.cov(pts.T))
    assert np.sqrt(ev[-1] / ev[1]) > 1.4


def test_opening_and_closing_on_the_sphere() -> None:
    """A narrow peak is removed by the opening and a narrow valley filled by the closing; a constant
    is left alone by both."""
    from inference.radial import _directions

    dirs, _ = _directions(400)
    flat = np.full(len(dirs), 4.0)
    assert np.allclose(spherical_opening(flat), 4.0) and np.allclose(spherical_closing(flat), 4.0)
    spoke = np.where(dirs[:, 0] > np.cos(np.radians(15)), 20.0, 4.0)
    assert np.allclose(spherical_opening(spoke), 4.0)
    dent = np.where(dirs[:, 0] > np.cos(np.radians(15)), 1.0, 4.0)
    assert np.allclose(spherical_closing(dent), 4.0)
