"""Fleischner 2017: every table cell, every size boundary, applicability, growth (CLINICAL.md)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from reports.guidelines import Finding, GuidelineInputError, fleischner
from reports.guidelines.common import round_half_up


def solid(d: float | None = None, multiplicity: str = "single", risk: str = "low", **kw) -> fleischner.FleischnerResult:
    return fleischner.assess(Finding(consistency="solid", mean_diameter_mm=d, multiplicity=multiplicity, risk=risk, **kw))


def months(r: fleischner.FleischnerResult) -> tuple[int | None, int | None]:
    return r.followup_months_min, r.followup_months_max


# --- rounding -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [(5.5, 6), (6.5, 7), (7.5, 8), (8.5, 9), (5.49, 5), (5.4999, 5), (8.4, 8), (2.5, 3), (0.5, 1), (6.0, 6)],
)
def test_round_half_up_rounds_halves_up_unlike_builtin_round(value: float, expected: int) -> None:
    assert round_half_up(value) == expected
    if value in (6.5, 8.5, 2.5, 0.5):
        assert round(value) != expected  # the trap CLINICAL.md warns about


# --- solid nodules: all 12 cells -------------------------------------------------------------------

SOLID_CELLS = [
    # (multiplicity, risk, diameter, (min, max), optional, words in the recommendation)
    ("single", "low", 4.0, (None, None), False, "No routine follow-up"),
    ("single", "high", 4.0, (12, 12), True, "Optional CT at 12 months"),
    ("single", "low", 7.0, (6, 12), False, "then consider CT at 18-24"),
    ("single", "high", 7.0, (6, 12), False, "then CT at 18-24"),
    ("single", "low", 10.0, (3, 3), False, "PET/CT, or tissue sampling"),
    ("single", "high", 10.0, (3, 3), False, "PET/CT, or tissue sampling"),
    ("multiple", "low", 4.0, (None, None), False, "No routine follow-up"),
    ("multiple", "high", 4.0, (12, 12), True, "Optional CT at 12 months"),
    ("multiple", "low", 7.0, (3, 6), False, "CT at 3-6 months, then consider CT at 18-24"),
    ("multiple", "high", 7.0, (3, 6), False, "CT at 3-6 months, then CT at 18-24"),
    ("multiple", "low", 10.0, (3, 6), False, "CT at 3-6 months, then consider CT at 18-24"),
    ("multiple", "high", 10.0, (3, 6), False, "CT at 3-6 months, then CT at 18-24"),
]


@pytest.mark.parametrize("multiplicity, risk, d, expected, optional, words", SOLID_CELLS)
def test_solid_table_cell(multiplicity, risk, d, expected, optional, words) -> None:
    r = solid(d, multiplicity, risk)
    assert r.applicable and r.reason is None
    assert months(r) == expected
    assert r.optional is optional
    assert words in r.recommendation
    assert multiplicity in r.category and f"{risk}-risk" in r.category
    assert "Radiology 2017;284:228-243" in r.rationale.text()


def test_worked_example_5_5_mm_rounds_to_6_and_gets_6_to_12_months() -> None:
    r = solid(5.5, "single", "low")
    assert r.rounded_diameter_mm == 6
    assert months(r) == (6, 12)
    assert r.to_dict()["followup_months_min"] == 6 and r.to_dict()["followup_months_max"] == 12
    text = r.rationale.text()
    assert "rounded to 6 mm" in text and "halves up" in text  # the convention is visible


@pytest.mark.parametrize(
    "d, band_min",
    [
        (5.4, None), (5.49, None), (5.5, 6), (6.0, 6), (8.0, 6), (8.4, 6), (8.49, 6), (8.5, 3), (9.0, 3),
    ],
)
def test_solid_size_boundaries_single_low_risk(d: float, band_min: int | None) -> None:
    assert solid(d).followup_months_min == band_min


@pytest.mark.parametrize(
    "volume, expected",
    [(99.9, (None, None)), (100.0, (6, 12)), (250.0, (6, 12)), (250.1, (3, 3))],
)
def test_solid_volume_bands_when_no_diameter(volume: float, expected) -> None:
    r = fleischner.assess(Finding(consistency="solid", volume_mm3=volume, multiplicity="single", risk="low"))
    assert months(r) == expected
    assert r.rounded_diameter_mm is None
    assert "With volume only" in r.rationale.text()


# --- subsolid nodules ------------------------------------------------------------------------------

SUBSOLID_CELLS = [
    # (consistency, multiplicity, diameter, solid component, (min, max), words)
    ("ground_glass", "single", 5.0, None, (None, None), "No routine follow-up"),
    ("ground_glass", "single", 6.0, None, (6, 12), "every 2 years until 5 years"),
    ("part_solid", "single", 5.0, 2.0, (None, None), "No routine follow-up"),
    ("part_solid", "single", 7.0, 3.0, (3, 6), "annual CT for 5 years"),
    ("ground_glass", "multiple", 5.0, None, (3, 6), "consider CT at 2 and 4 years"),
    ("part_solid", "multiple", 5.0, 2.0, (3, 6), "consider CT at 2 and 4 years"),
    ("ground_glass", "multiple", 7.0, None, (3, 6), "most suspicious nodule"),
    ("part_solid", "multiple", 7.0, 3.0, (3, 6), "most suspicious nodule"),
]


@pytest.mark.parametrize("consistency, multiplicity, d, solid_part, expected, words", SUBSOLID_CELLS)
def test_subsolid_table_cell(consistency, multiplicity, d, solid_part, expected, words) -> None:
    r = fleischner.assess(Finding(consistency=consistency, mean_diameter_mm=d, solid_component_mm=solid_part,
                                  multiplicity=multiplicity))
    assert months(r) == expected
    assert words in r.recommendation


@pytest.mark.parametrize("d, expected", [(5.4, (None, None)), (5.5, (6, 12)), (6.0, (6, 12))])
def test_ground_glass_6mm_boundary_after_rounding(d: float, expected) -> None:
    r = fleischner.assess(Finding(consistency="ground_glass", mean_diameter_mm=d, multiplicity="single"))
    assert months(r) == expected


@pytest.mark.parametrize("volume, large", [(99.9, False), (100.0, True), (100.1, True)])
def test_subsolid_volume_100_counts_as_6mm(volume: float, large: bool) -> None:
    r = fleischner.assess(Finding(consistency="ground_glass", volume_mm3=volume, multiplicity="single"))
    assert (r.followup_months_min is not None) is large


@pytest.mark.parametrize(
    "solid_part, expected_months, words",
    [
        (5.4, (3, 6), "annual CT for 5 years"),  # rounds to 5: < 6 mm
        (5.5, (3, 6), "highly suspicious"),  # rounds to 6: >= 6 mm
        (6.0, (3, 6), "highly suspicious"),
        (8.0, (3, 6), "highly suspicious"),  # 8 is not > 8
        (8.4, (3, 6), "highly suspicious"),
        (8.5, (None, None), "PET/CT, biopsy or resection"),  # rounds to 9: > 8 mm
        (9.0, (None, None), "PET/CT, biopsy or resection"),
    ],
)
def test_part_solid_solid_component_boundaries(solid_part: float, expected_months, words: str) -> None:
    for multiplicity in ("single", "multiple"):
        r = fleischner.assess(Finding(consistency="part_solid", mean_diameter_mm=12.0, solid_component_mm=solid_part,
                                      multiplicity=multiplicity))
        assert months(r) == expected_months, multiplicity
        if multiplicity == "single" or solid_part >= 5.5:  # multiple, solid part < 6: the multiple row
            assert words in r.recommendation


def test_every_category_label_fits_the_database_column() -> None:
    # dicom_node.models.Recommendation.category is String(32); PostgreSQL enforces it.
    cells = [*fleischner._SOLID.values(), *fleischner._SUBSOLID.values(), fleischner._SOLID_COMPONENT_6,
             fleischner._SOLID_COMPONENT_8, fleischner._GROWTH, fleischner._FAST_VDT]
    assert all(len(c.category) <= 32 for c in cells)


def test_solid_component_rule_ranks_above_plain_part_solid() -> None:
    plain = fleischner.assess(Finding(consistency="part_solid", mean_diameter_mm=12.0, solid_component_mm=3.0, multiplicity="single"))
    six = fleischner.assess(Finding(consistency="part_solid", mean_diameter_mm=12.0, solid_component_mm=7.0, multiplicity="single"))
    nine = fleischner.assess(Finding(consistency="part_solid", mean_diameter_mm=12.0, solid_component_mm=9.0, multiplicity="single"))
    assert plain.rank < six.rank < nine.rank
    assert nine.workup


# --- applicability -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"age_years": 34.9}, "younger than 35"),
        ({"age_years": 20}, "younger than 35"),
        ({"screening": True}, "screening"),
        ({"known_cancer": True}, "known primary cancer"),
        ({"immunocompromised": True}, "immunocompromised"),
    ],
)
def test_not_applicable_with_reason(extra: dict, words: str) -> None:
    r = solid(7.0, **extra)
    assert r.applicable is False
    assert words in r.reason
    assert months(r) == (None, None) and r.optional is None
    d = r.to_dict()
    assert d["applicable"] is False and words in d["reason"]


def test_not_applicable_needs_no_nodule_fields_and_lists_every_reason() -> None:
    r = fleischner.assess(Finding(age_years=30, known_cancer=True, immunocompromised=True, screening=True))
    assert not r.applicable
    for words in ("younger than 35", "screening", "known primary cancer", "immunocompromised"):
        assert words in r.reason


def test_age_35_is_applicable_and_missing_age_is_assumed_adult() -> None:
    assert solid(7.0, age_years=35).applicable
    r = solid(7.0)
    assert r.applicable
    assert "assumed to be an adult" in r.rationale.text()
    assert "assumed" not in solid(7.0, age_years=60).rationale.text()


# --- growth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prior, current, significant",
    [
        (5.0, 6.9, False),
        (5.0, 7.0, True),  # exactly 2 mm: significant (>= 2)
        (5.3, 7.3, True),  # 7.3 - 5.3 is 1.9999999999999996 in binary floats
        (5.3, 7.2, False),
        (7.0, 6.0, False),
    ],
)
def test_growth_of_2mm_is_significant_and_escalates(prior: float, current: float, significant: bool) -> None:
    r = solid(current, prior_mean_diameter_mm=prior)
    assert r.significant_growth is significant
    assert r.growth_mm == Decimal(repr(current)) - Decimal(repr(prior))
    if significant:
        assert months(r) == (3, 3) and "Significant growth" in r.recommendation
        assert "Table cell before growth" in r.rationale.text()
    else:
        assert "Significant growth" not in r.recommendation


def test_growth_of_solid_component_counts_for_part_solid() -> None:
    r = fleischner.assess(Finding(consistency="part_solid", mean_diameter_mm=10.0, prior_mean_diameter_mm=9.5,
                                  solid_component_mm=5.0, prior_solid_component_mm=3.0, multiplicity="single"))
    assert r.significant_growth is True


def test_growth_never_lowers_a_work_up_recommendation() -> None:
    r = fleischner.assess(Finding(consistency="part_solid", mean_diameter_mm=14.0, prior_mean_diameter_mm=10.0,
                                  solid_component_mm=10.0, multiplicity="single"))
    assert r.significant_growth and "biopsy or resection" in r.recommendation


def test_growth_not_assessed_without_prior_diameter() -> None:
    r = fleischner.assess(Finding(consistency="solid", mean_diameter_mm=7.0, prior_volume_mm3=100.0,
                                  multiplicity="single", risk="low"))
    assert r.significant_growth is None and r.growth_mm is None
    assert "VDT rules" in r.rationale.text()


def test_fast_vdt_escalation_to_3_months() -> None:
    r = fleischner.escalate_for_fast_growth(solid(7.0), 250.0)
    assert months(r) == (3, 3)
    text = r.rationale.text()
    assert "doubling time < 400 days" in text and "250" in text and "6-8 mm" in text
    # Already as urgent or more: unchanged.
    big = fleischner.assess(Finding(consistency="part_solid", mean_diameter_mm=14.0, solid_component_mm=10.0, multiplicity="single"))
    assert fleischner.escalate_for_fast_growth(big, 100.0) is big


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "finding, words",
    [
        (Finding(mean_diameter_mm=5.0, multiplicity="single", risk="low"), "consistency is required"),
        (Finding(consistency="solid", mean_diameter_mm=5.0, risk="low"), "multiplicity is required"),
        (Finding(consistency="solid", mean_diameter_mm=5.0, multiplicity="single"), "risk is required"),
        (Finding(consistency="solid", multiplicity="single", risk="low"), "mean_diameter_mm or volume_mm3"),
        (Finding(consistency="part_solid", mean_diameter_mm=7.0, multiplicity="single"), "solid_component_mm is required"),
    ],
)
def test_missing_field_is_named(finding: Finding, words: str) -> None:
    with pytest.raises(GuidelineInputError, match=words):
        fleischner.assess(finding)


def test_subsolid_needs_no_risk_and_small_part_solid_needs_no_solid_component() -> None:
    r = fleischner.assess(Finding(consistency="part_solid", mean_diameter_mm=5.0, multiplicity="single"))
    assert months(r) == (None, None)
