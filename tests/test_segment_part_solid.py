"""A part-solid nodule whose ground-glass layer is thin: about two blur widths around its solid core.

:func:`inference.segmentation._ground_glass_rim` finds the ground glass as a *plateau* – voxels
farther than a blur width from both the solid part and the outer boundary. Around a solid core such
a layer leaves only a thin shell of plateau voxels, 2–5 % of the region; the rule used to ask for 5 %,
so the nodule was read as solid and measured as its core (−37 to −40 % volume; on held-out phantom
1005, N4 at 11.4 mm with an 8.2 mm core, −29 %). A solid nodule's blurred edge leaves no plateau at
all (≤ 0.2 % on the phantoms), so 2 % still tells the two apart. Analytic chest of
``tests/test_segment_attached.py`` (1 mm pixels, 1.25 mm slices), seeded at the nodule's centre.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_segment_attached import _scene, _segment

GROUND_GLASS_HU = -450.0


@pytest.mark.parametrize(("nodule_mm", "core_mm", "seed"), [(12.0, 8.0, 1), (13.0, 9.0, 2), (11.0, 7.2, 1)])
def test_thin_ground_glass_layer_is_measured_with_the_nodule(nodule_mm: float, core_mm: float, seed: int) -> None:
    # the solid core sits 2 mm away from an unrelated thin vessel (8 mm), as in the attached scenes
    vol, true_v = _scene(nodule_mm, GROUND_GLASS_HU, 2.0, 8.0, seed=seed, core_mm=core_mm)
    seg = _segment(vol, nodule_mm / 2)
    assert seg is not None
    assert seg.nodule_hu < seg.solid_threshold_hu, "read as solid: the ground-glass layer was not found"
    err = (seg.volume_mm3 - true_v) / true_v
    assert abs(err) <= 0.10, f"volume error {err:+.1%}"
    # the solid component is the core, not the whole nodule
    core_v = np.pi / 6 * core_mm ** 3
    assert 0.6 * core_v <= seg.solid_volume_mm3 <= 1.6 * core_v


@pytest.mark.parametrize(("nodule_mm", "seed"), [(5.0, 1), (9.0, 2), (15.0, 1)])
def test_solid_nodule_is_not_read_as_part_solid(nodule_mm: float, seed: int) -> None:
    vol, true_v = _scene(nodule_mm, 30.0, 2.0, 8.0, seed=seed)
    seg = _segment(vol, nodule_mm / 2)
    assert seg is not None
    assert seg.nodule_hu > seg.solid_threshold_hu
    assert abs(seg.volume_mm3 - true_v) <= 0.05 * true_v


def test_solid_juxtapleural_nodule_on_coarse_pixels_stays_solid() -> None:
    """Development phantom seed 19 at 256² (1.6 mm pixels), prior study: N3, a 6.2 mm solid nodule on
    the pleura, as the tracker propagates it from the current study (the current's radius as the
    hint). Its region runs along the wall (1240 mm³), and 16 scattered voxels 6–16 mm from its solid
    part made a "plateau" of 4 % of it; read as ground glass at 2 %, the mask ran along the wall
    (12 000 mm³) and the pair was lost. At the lung boundary the layer must be 5 %."""
    from inference.lung import compute_lung_mask
    from inference.phantoms import generate_patient
    from inference.segmentation import segment_nodule

    patient = generate_patient(19, timepoints=2, rows=256)
    vol = patient.timepoints[0].volume
    truth = next(n for n in patient.truth()["nodules"] if n["id"] == "N3")["timepoints"][0]
    hint = 4.05  # the current study's measurement (279 mm³)
    seg = segment_nodule(vol, compute_lung_mask(vol), vol.geometry.lps_to_index(np.asarray(truth["center_mm"])),
                         radius_hint_mm=hint, search_mm=0.7 * hint, split_far=True)
    assert seg is not None
    assert seg.nodule_hu > seg.solid_threshold_hu, "a solid nodule read as part-solid"
    assert abs(seg.volume_mm3 - truth["volume_mm3"]) <= 0.3 * truth["volume_mm3"]
