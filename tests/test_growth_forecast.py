"""Pipeline forecast with the shipped weights: shapes, grid mapping, history use, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from inference.growth.forecast import GrowthForecaster, PriorPatch, default_weights_path
from inference.types import CTVolume, NoduleMeasurement, VolumeGeometry
from tests.growth_synth import sphere_volume


def _study(radius_mm: float, seed: int, spacing=(0.7, 0.7, 1.25), shape=(48, 120, 120)) -> tuple[CTVolume, NoduleMeasurement]:
    rng = np.random.default_rng(seed)
    hu, mask = sphere_volume(shape, spacing, radius_mm, rng)
    geo = VolumeGeometry(origin=(-42.0, -42.0, -30.0), spacing=spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), shape=shape)
    ct = CTVolume(hu=hu, geometry=geo, study_instance_uid="1.2", series_instance_uid="1.3",
                  frame_of_reference_uid="1.4", sop_instance_uids=[])
    idx = np.argwhere(mask)
    a, b = idx.min(0), idx.max(0) + 1
    d = 2 * radius_mm
    nod = NoduleMeasurement(
        center_mm=tuple(geo.index_to_lps(idx.mean(0))), volume_mm3=float(mask.sum()) * geo.voxel_volume_mm3,
        long_axis_mm=d, short_axis_mm=d, mean_diameter_mm=d, solid_component_mm=d, mean_hu=40.0,
        consistency="solid", long_axis_endpoints_mm=((0.0, 0.0, 0.0), (d, 0.0, 0.0)), long_axis_slice=int(idx.mean(0)[0]),
        mask=mask[a[0]:b[0], a[1]:b[1], a[2]:b[2]].astype(bool), mask_offset=tuple(int(x) for x in a),
    )
    return ct, nod


@pytest.fixture(scope="module")
def forecaster() -> GrowthForecaster:
    return GrowthForecaster()


def test_shipped_weights_small() -> None:
    path = default_weights_path()
    assert path.is_file()
    assert path.stat().st_size < 2 * 1024 * 1024  # committed in git: keep it small


def test_forecast_batch(forecaster: GrowthForecaster) -> None:
    cur, nod = _study(5.0, seed=1)
    prior_ct, prior_nod = _study(4.0, seed=2, spacing=(0.8, 0.8, 1.0), shape=(60, 100, 100))
    prior = PriorPatch(prior_ct, prior_nod, days_before=300)
    res = forecaster.forecast(cur, [nod, nod, nod], [365, 365, 30], [prior, None, None])
    assert len(res) == 3
    for f in res:
        assert f.model_version.startswith("MT-NoGNet")
        assert f.volume_low_mm3 <= f.volume_mm3 <= f.volume_high_mm3
        assert f.mean_diameter_low_mm <= f.mean_diameter_mm <= f.mean_diameter_high_mm
        assert f.mask is not None and f.mask.dtype == bool
        z, y, x = f.mask_offset
        dz, dy, dx = f.mask.shape
        assert 0 <= z and z + dz <= cur.hu.shape[0] and 0 <= y and y + dy <= cur.hu.shape[1] and 0 <= x and x + dx <= cur.hu.shape[2]
        # the predicted extent sits on the nodule (centroids within 2 mm) in the current grid
        c_pred = (np.argwhere(f.mask).mean(0) + np.asarray(f.mask_offset)) * np.asarray(cur.geometry.spacing)[::-1]
        c_nod = (np.argwhere(nod.mask).mean(0) + np.asarray(nod.mask_offset)) * np.asarray(cur.geometry.spacing)[::-1]
        assert np.linalg.norm(c_pred - c_nod) < 2.0
        # the mask's volume agrees with the reported volume
        v_mask = float(f.mask.sum()) * cur.geometry.voxel_volume_mm3
        assert abs(v_mask - f.volume_mm3) / f.volume_mm3 < 0.2
    grown, short = res[0], res[2]
    # observed growth 4 → 5 mm over 300 days, extrapolated over a year: clearly larger
    assert grown.volume_mm3 > 1.3 * nod.volume_mm3
    # a month ahead with no history: close to the current size
    assert abs(short.volume_mm3 - nod.volume_mm3) / nod.volume_mm3 < 0.25


def test_forecast_rejects_bad_input(forecaster: GrowthForecaster) -> None:
    cur, nod = _study(4.0, seed=3)
    with pytest.raises(ValueError, match="horizon_days must be positive"):
        forecaster.forecast(cur, [nod], -10)
    with pytest.raises(ValueError, match="2 priors for 1 nodules"):
        forecaster.forecast(cur, [nod], 100, [None, None])
    with pytest.raises(ValueError, match="days_before must be a positive"):
        PriorPatch(cur, nod, days_before=0)
    empty = NoduleMeasurement(**{**nod.__dict__, "mask": np.zeros((3, 3, 3), bool)})
    with pytest.raises(ValueError, match="empty mask"):
        forecaster.forecast(cur, [empty], 100)
    assert forecaster.forecast(cur, [], 100) == []


def test_forecast_service_gives_the_in_process_forecast(forecaster: GrowthForecaster) -> None:
    """``noduletrack analyze`` without a spare core forecasts in a child process that loaded the model
    ahead (inference/growth/service.py): the same Forecast values and masks as in-process; a service
    that was never asked is stopped without waiting for it."""
    from inference.growth.service import ForecastService

    cur, nod = _study(5.0, seed=1)
    prior_ct, prior_nod = _study(4.0, seed=2, spacing=(0.8, 0.8, 1.0), shape=(60, 100, 100))
    want = forecaster.forecast(cur, [nod, nod], 365, [PriorPatch(prior_ct, prior_nod, days_before=300), None])
    with ForecastService() as service:
        answer = service.forecast(cur, [nod, nod], 365, [(prior_ct, prior_nod, 300.0), None])
    assert answer is not None
    version, got = answer
    assert version == forecaster.model_version
    for g, w in zip(got, want):
        for name in ("horizon_days", "volume_mm3", "volume_low_mm3", "volume_high_mm3", "mean_diameter_mm",
                     "mean_diameter_low_mm", "mean_diameter_high_mm", "model_version", "mask_offset"):
            assert getattr(g, name) == getattr(w, name), name
        assert np.array_equal(g.mask, w.mask)
    unused = ForecastService()
    unused.close()
    assert unused.forecast(cur, [nod], 365, [None]) is None  # closed: the caller forecasts in-process


def test_pipeline_forecasts_in_process_when_the_service_cannot_answer() -> None:
    from types import SimpleNamespace

    from dicom_node import pipeline

    cur, nod = _study(5.0, seed=1)

    class Silent:
        waited_s = 0.0

        def forecast(self, *args, **kwargs):  # the child died, or could not load the model
            return None

    tracked = SimpleNamespace(current=nod, prior=None, forecast=None)
    analysis = SimpleNamespace(nodules=[tracked], interval_days=None)
    notes: list[str] = []
    version = pipeline._forecast(analysis, None, cur, 365, notes, Silent())
    assert version.startswith("MT-NoGNet") and tracked.forecast is not None and not notes


def test_forecast_service_that_is_not_ready_in_time_gives_way_to_the_in_process_forecast() -> None:
    """A child that does not answer within the service's timeout (here: still importing torch after
    1 ms; in the field, a stuck child) must not hang ``analyze``: the service answers None at once,
    and closing it stops the child."""
    import time

    from inference.growth.service import ForecastService

    cur, nod = _study(5.0, seed=1)
    service = ForecastService(timeout_s=0.001)
    t0 = time.perf_counter()
    assert service.forecast(cur, [nod], 365, [None]) is None
    assert time.perf_counter() - t0 < 1.0
    proc = service._proc
    service.close()
    assert proc is not None and proc.poll() is not None  # stopped and reaped
