"""Deterministic output UIDs: identical inputs give identical SOP Instance UIDs for SEG, SR and key images.

Re-analysing a study must replace its objects in the PACS, never add copies. These tests build every
object twice from inputs that are equal in value but not the same Python objects (fresh copies,
other memory layouts), run the real growth model twice (two forecaster instances), and add noise
far below any reported precision — the UIDs must not move. A clinically visible change must move
them (covered with the predecessor references in test_reports_dicom.py).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np

from inference.types import Forecast, NoduleMeasurement, TrackedNodule
from reports.keyimages import build_key_images
from reports.seg import build_seg
from reports.sr import build_sr
from tests.reports_fixtures import phantom_case

MODEL = "det-1"


def _uids(case, nodules, recommendation, model: str = MODEL) -> dict[str, list[str]]:
    seg = build_seg(case.current, nodules, model_version=model)
    sr = build_sr(case.current, nodules, seg, recommendation, model_version=model, prior_study_date=case.prior.study_date)
    keys = build_key_images(case.prior, case.current, nodules, model_version=model)
    return {
        "seg": [seg.dataset.SeriesInstanceUID, seg.dataset.SOPInstanceUID],
        "sr": [sr.dataset.SeriesInstanceUID, sr.dataset.SOPInstanceUID],
        "keys": [k.dataset.SeriesInstanceUID for k in keys] + [k.dataset.SOPInstanceUID for k in keys],
        "key_pixels": [k.dataset.PixelData for k in keys],
    }


def _relayout(value):
    """A deep copy with every array in Fortran order (same values, other memory layout)."""
    if isinstance(value, np.ndarray):
        return np.asfortranarray(value.copy())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _relayout(getattr(value, f.name)) for f in dataclasses.fields(value)
                                             if f.init})
    if isinstance(value, tuple):
        return tuple(_relayout(v) for v in value)
    if isinstance(value, list):
        return [_relayout(v) for v in value]
    return value


def _jitter(value, rel: float = 1e-12):
    """Every float of a measurement/forecast nudged by ``rel`` (last-bit noise of another BLAS order)."""
    if isinstance(value, float) and math.isfinite(value):
        return value * (1.0 + rel)
    if isinstance(value, (NoduleMeasurement, Forecast, TrackedNodule)):
        return dataclasses.replace(value, **{f.name: _jitter(getattr(value, f.name), rel) for f in dataclasses.fields(value)
                                             if f.init})
    if isinstance(value, tuple):
        return tuple(_jitter(v, rel) for v in value)
    return value


def test_same_inputs_same_uids_for_every_object() -> None:
    case = phantom_case(1)  # two tracked nodules with forecasts; Lung-RADS recommendation from the real engine
    first = _uids(case, case.nodules, case.recommendation)
    again = _uids(case, _relayout(copy.deepcopy(case.nodules)), copy.deepcopy(case.recommendation))
    assert first == again
    assert len(first["keys"]) == 2 * sum(n.current is not None for n in case.nodules)
    # Key images are one series; every image has its own instance UID.
    n = len(first["keys"]) // 2
    assert len(set(first["keys"][:n])) == 1 and len(set(first["keys"][n:])) == n


def test_last_bit_noise_does_not_make_a_new_result() -> None:
    case = phantom_case(1)
    first = _uids(case, case.nodules, case.recommendation)
    noisy = _uids(case, [_jitter(n) for n in case.nodules], case.recommendation)
    assert {k: v for k, v in noisy.items() if k != "key_pixels"} == {k: v for k, v in first.items() if k != "key_pixels"}


def test_a_visible_change_gives_new_uids_for_every_object() -> None:
    case = phantom_case(1)
    first = _uids(case, case.nodules, case.recommendation)
    i = next(i for i, n in enumerate(case.nodules) if n.current is not None and n.forecast is not None)
    changed = list(case.nodules)
    f = changed[i].forecast
    changed[i] = dataclasses.replace(changed[i], forecast=dataclasses.replace(f, volume_high_mm3=f.volume_high_mm3 * 1.05))
    other = _uids(case, changed, case.recommendation)
    # Only the forecast band changed: the SEG (masks, labels) is the same object, SR and key images are new.
    assert other["seg"] == first["seg"]
    assert not set(other["sr"]) & set(first["sr"])
    assert not set(other["keys"]) & set(first["keys"])


def test_the_growth_model_run_twice_gives_the_same_objects() -> None:
    """The real MT-NoGNet forecaster (two instances, TTA on) on the same nodules: identical forecasts."""
    from inference.growth.forecast import GrowthForecaster, PriorPatch

    case = phantom_case(1)
    present = [n for n in case.nodules if n.current is not None]
    interval = (case.current.study_date - case.prior.study_date).days

    def forecast_all() -> list[TrackedNodule]:
        model = GrowthForecaster()
        priors = [PriorPatch(case.prior, n.prior, float(interval)) if n.prior is not None else None for n in present]
        forecasts = model.forecast(case.current, [n.current for n in present], 365, priors=priors)
        return [dataclasses.replace(n, forecast=f) for n, f in zip(present, forecasts)]

    a, b = forecast_all(), forecast_all()
    for x, y in zip(a, b):
        fx, fy = x.forecast, y.forecast
        assert (fx.volume_mm3, fx.volume_low_mm3, fx.volume_high_mm3) == (fy.volume_mm3, fy.volume_low_mm3, fy.volume_high_mm3)
        assert fx.mask_offset == fy.mask_offset and np.array_equal(fx.mask, fy.mask)
    model = a[0].forecast.model_version
    assert _uids(case, a, case.recommendation, model) == _uids(case, b, case.recommendation, model)


def test_key_images_read_back_with_highdicom(tmp_path) -> None:
    """The saved RLE key image reads back (highdicom) with exactly the rendered pixels and identifiers."""
    import highdicom as hd

    from reports.keyimages import render_nodule_panel

    case = phantom_case(1)
    keys = build_key_images(case.prior, case.current, case.nodules, model_version=MODEL)
    for k in keys[:2]:
        path = tmp_path / f"{k.uids.sop_instance_uid}.dcm"
        k.dataset.save_as(path, enforce_file_format=True)
        back = hd.imread(path)
        assert back.SOPInstanceUID == k.uids.sop_instance_uid and back.StudyInstanceUID == case.current.study_instance_uid
        nodule = next(n for n in case.nodules if n.tracking_uid == k.tracking_uid)
        assert np.array_equal(back.pixel_array, render_nodule_panel(nodule, case.prior, case.current))
