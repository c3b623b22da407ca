"""Volumetric rules: VDT, volume change, significant growth, bands and programme thresholds."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from reports.guidelines import Finding, GuidelineInputError, volumetric


def vdt(v1: float, v2: float, days: float, **kw) -> volumetric.VolumetricResult:
    return volumetric.assess(Finding(prior_volume_mm3=v1, volume_mm3=v2, interval_days=days, **kw))


def test_worked_example_100_to_200_in_300_days() -> None:
    r = vdt(100.0, 200.0, 300)
    assert r.vdt_days == Decimal("300.0") and r.vdt_band == "<400"
    assert r.volume_change_pct == Decimal("100.0") and r.significant_growth is True
    assert r.to_dict()["vdt_days"] == 300.0


def test_formula_matches_definition() -> None:
    r = vdt(150.0, 260.0, 410)
    expected = 410 * math.log(2) / math.log(260.0 / 150.0)
    assert abs(float(r.vdt_days) - expected) <= 0.05
    assert abs(float(r.volume_change_pct) - 100 * (260 - 150) / 150) <= 0.05


@pytest.mark.parametrize(
    "days, band",
    [(399.9, "<400"), (400, "400-600"), (400.04, "400-600"), (599.9, "400-600"), (600, "400-600"),
     (600.1, ">600"), (1000, ">600")],
)
def test_band_edges(days: float, band: str) -> None:
    r = vdt(100.0, 200.0, days)  # doubling: VDT == interval
    assert r.vdt_band == band
    if days in (400, 600):
        assert "Exactly 400 days is in the 400-600 band" in r.rationale.text()


def test_band_read_from_reported_vdt() -> None:
    r = vdt(100.0, 200.0, 399.96)  # reported as 400.0 days
    assert r.vdt_days == Decimal("400.0") and r.vdt_band == "400-600"


@pytest.mark.parametrize(
    "v2, significant",
    [(125.0, False), (125.1, True), (124.9, False), (125.00001, True)],
)
def test_significant_growth_is_strictly_more_than_25_percent(v2: float, significant: bool) -> None:
    r = vdt(100.0, v2, 90)
    assert r.significant_growth is significant
    assert "> 25 %" in r.rationale.text()


def test_exactly_25_percent_with_float_prone_values() -> None:
    # 0.3 -> 0.375 is +25 % exactly in decimal, 25.000000000000004 in binary floats.
    assert (0.375 - 0.3) / 0.3 * 100 != 25
    assert vdt(0.3, 0.375, 90).significant_growth is False


def test_no_growth_and_decreasing_have_no_vdt() -> None:
    same = vdt(100.0, 100.0, 90)
    assert same.vdt_days is None and same.vdt_band == "no_growth" and same.volume_change_pct == 0
    smaller = vdt(100.0, 80.0, 90)
    assert smaller.vdt_days is None and smaller.vdt_band == "decreasing"
    assert smaller.volume_change_pct == Decimal("-20.0") and smaller.significant_growth is False
    assert smaller.to_dict()["vdt_days"] is None


def test_fast_growth_needs_significant_change() -> None:
    assert vdt(100.0, 200.0, 300).fast_growth
    small_change = vdt(100.0, 110.0, 30)  # VDT ~218 d but +10 %: within measurement error
    assert small_change.vdt_band == "<400" and not small_change.fast_growth


@pytest.mark.parametrize(
    "missing",
    ["volume_mm3", "prior_volume_mm3", "interval_days"],
)
def test_required_fields(missing: str) -> None:
    kw = dict(volume_mm3=200.0, prior_volume_mm3=100.0, interval_days=300)
    del kw[missing]
    with pytest.raises(GuidelineInputError, match=missing):
        volumetric.assess(Finding(**kw))


def test_interval_must_be_positive() -> None:
    with pytest.raises(GuidelineInputError, match="interval_days must be > 0"):
        Finding(volume_mm3=200.0, prior_volume_mm3=100.0, interval_days=0)


# --- programmes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "volume, new, refer",
    [(300.0, False, False), (300.1, False, True), (200.0, True, False), (200.1, True, True), (250.0, None, False)],
)
def test_eups_thresholds(volume: float, new, refer: bool) -> None:
    r = volumetric.assess(Finding(volume_mm3=volume, new=new, program="EUPS"))
    assert ("multidisciplinary team" in r.program_recommendation) is refer
    assert r.vdt_days is None and r.vdt_band is None  # no prior: no VDT, still a programme answer
    assert r.to_dict()["program"] == "EUPS"


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(volume_mm3=79.9), "no follow-up"),
        (dict(volume_mm3=80.0), "CT at 3 months"),
        (dict(volume_mm3=299.9), "CT at 3 months"),
        (dict(volume_mm3=300.0), "Brock"),
        (dict(mean_diameter_mm=4.9), "no follow-up"),
        (dict(mean_diameter_mm=5.0), "CT at 3 months"),
        (dict(mean_diameter_mm=7.9), "CT at 3 months"),
        (dict(mean_diameter_mm=8.0), "Brock"),
    ],
)
def test_bts_thresholds(kw: dict, words: str) -> None:
    r = volumetric.assess(Finding(program="BTS", **kw))
    assert words in r.program_recommendation


def test_nelson_uses_vdt_only_beyond_measurement_error() -> None:
    assert "VDT applies" in vdt(100.0, 150.0, 200, program="NELSON").program_recommendation
    assert "VDT not used" in vdt(100.0, 120.0, 200, program="NELSON").program_recommendation


def test_program_with_prior_reports_both() -> None:
    r = vdt(250.0, 500.0, 300, program="EUPS")
    assert r.vdt_band == "<400" and "multidisciplinary team" in r.program_recommendation
