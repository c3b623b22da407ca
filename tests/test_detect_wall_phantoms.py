"""Juxtapleural nodules of development phantoms (512², seeds in the names) that the detector missed.

* seed 22, current study, N1: a 19 mm juxtapleural nodule, flattened by the pleura (elongation
  1.9, prolateness 1.1), rejected as a tube (:func:`inference.shape.is_lens_at_wall`);
* seed 16, prior study, N1: a 9 mm solid juxtapleural nodule on 0.8 mm slices whose candidate
  shell was 0.28 against a limit of 0.24, partly from the pleura's partial-volume rim, which the
  shell test now leaves out (:func:`inference.candidates.blob_candidates`).

Each is checked on the phantom itself, end to end through :func:`inference.detection.detect_nodules`.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize(("seed", "t", "nodule"), [(22, 1, "N1"), (16, 0, "N1")])
def test_juxtapleural_nodule_of_a_development_phantom_is_detected(seed: int, t: int, nodule: str) -> None:
    from inference.detection import detect_nodules
    from inference.lung import compute_lung_mask
    from inference.phantoms import generate_patient

    patient = generate_patient(seed, timepoints=2, rows=512)
    vol = patient.timepoints[t].volume
    truth = next(n for n in patient.truth()["nodules"] if n["id"] == nodule)["timepoints"][t]
    found = detect_nodules(vol, compute_lung_mask(vol))
    centre = np.asarray(truth["center_mm"])
    near = [c for c in found if np.linalg.norm(
        vol.geometry.index_to_lps(np.asarray(c.segmentation.peak_index, float)) - centre)
        <= 0.5 * truth["equivalent_diameter_mm"]]
    assert near, f"{nodule} ({truth['equivalent_diameter_mm']:.1f} mm, juxtapleural) not detected"
    # found and roughly measured: the base against the pleura is partly outside the lung envelope
    assert abs(near[0].segmentation.volume_mm3 - truth["volume_mm3"]) <= 0.3 * truth["volume_mm3"]
