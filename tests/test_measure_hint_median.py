"""A detected nodule's volume does not hang on one size hint (issue 03, volume accuracy).

The segmentation's size hint sets the crop, the search radius, the lung-envelope closing at the
pleura and the cap on the vessel-cutting opening, and the volume moves with it: development seed
30's 12.5 mm juxtapleural ground-glass nodule measures 1,012 mm³ with a 5.7 mm hint and 1,322 mm³
with 6.2 mm (true 1,031). The analysis measures each detection three times, as the detector
segmented it and again at its centroid with 0.8× and 1.25× its own radius, and keeps the median
(:func:`inference.analysis._hint_median`). Checked on development phantoms (512², one time point)
whose detections the detector's own segmentation measured 11–14 % high: with the median, within 5 %.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize(("seed", "t", "nodule"), [(54, 1, "N4"), (39, 0, "N4")])
def test_detected_nodule_is_measured_at_the_median_of_three_hints(seed: int, t: int, nodule: str) -> None:
    from inference.analysis import HINT_FACTORS, _collect
    from inference.detection import detect_nodules
    from inference.lung import compute_lung_mask
    from inference.phantoms import generate_patient

    patient = generate_patient(seed, timepoints=2, rows=512)
    vol = patient.timepoints[t].volume
    truth = next(n for n in patient.truth()["nodules"] if n["id"] == nodule)["timepoints"][t]
    lung = compute_lung_mask(vol)
    found = _collect(vol, lung, [], detect_nodules(vol, lung))
    centre = np.asarray(truth["center_mm"])
    near = [f for f in found if np.linalg.norm(np.asarray(f.meas.center_mm) - centre)
            <= 0.5 * truth["equivalent_diameter_mm"]]
    assert len(near) == 1, f"{nodule} ({truth['equivalent_diameter_mm']:.1f} mm) detected {len(near)} times"
    err = near[0].meas.volume_mm3 / truth["volume_mm3"] - 1.0
    assert abs(err) <= 0.05, f"volume error {err:+.1%} (hint factors {HINT_FACTORS})"


def test_propagated_nodule_is_measured_as_a_detection_is() -> None:
    """A nodule found at one time point and segmented at the other from there (tracking's
    propagation) is measured at the median of the same three hints after its re-measurement:
    development seed 39's 5.3 mm juxtapleural nodule at the follow-up, +12.1 % with its own radius
    as the only hint, +8.4 % with the median."""
    from inference.analysis import analyze_pair
    from inference.phantoms import generate_patient

    patient = generate_patient(39, timepoints=2, rows=512)
    truth = next(n for n in patient.truth()["nodules"] if n["id"] == "N4")["timepoints"][1]
    result = analyze_pair(patient.timepoints[0].volume, patient.timepoints[1].volume)
    centre = np.asarray(truth["center_mm"])
    near = [t.current for t in result.nodules if t.current is not None
            and np.linalg.norm(np.asarray(t.current.center_mm) - centre) <= 0.5 * truth["equivalent_diameter_mm"]]
    assert len(near) == 1, f"N4 measured {len(near)} times at the follow-up"
    err = near[0].volume_mm3 / truth["volume_mm3"] - 1.0
    assert abs(err) <= 0.10, f"volume error {err:+.1%}"
