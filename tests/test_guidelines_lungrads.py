"""Lung-RADS v2022: every category cell and boundary, growth, stepped management (CLINICAL.md)."""

from __future__ import annotations

import pytest

from reports.guidelines import Finding, GuidelineInputError, lungrads


def cat(**kw) -> str:
    return lungrads.assess(Finding(**kw)).category


def solid(d: float, **kw) -> lungrads.LungRadsResult:
    return lungrads.assess(Finding(consistency="solid", mean_diameter_mm=d, **kw))


def grown(consistency: str, d: float, prior: float, days: float = 365, **kw) -> lungrads.LungRadsResult:
    return lungrads.assess(Finding(consistency=consistency, mean_diameter_mm=d, prior_mean_diameter_mm=prior,
                                   interval_days=days, **kw))


# --- worked examples ----------------------------------------------------------------------------


def test_worked_example_5_9_is_2_and_6_0_is_3() -> None:
    assert solid(5.9, baseline=True).category == "2"
    assert solid(6.0, baseline=True).category == "3"


# --- solid nodules: baseline, new, growing bands with their boundaries ---------------------------


@pytest.mark.parametrize(
    "d, expected",
    [(1.0, "2"), (5.9, "2"), (5.94, "2"), (5.99, "2"), (6.0, "3"), (7.9, "3"), (8.0, "4A"), (8.5, "4A"),
     (14.9, "4A"), (15.0, "4B"), (40.0, "4B")],
)
def test_solid_baseline_bands(d: float, expected: str) -> None:
    assert solid(d, baseline=True).category == expected


@pytest.mark.parametrize(
    "d, expected",
    [(3.9, "2"), (4.0, "3"), (5.9, "3"), (6.0, "4A"), (7.9, "4A"), (8.0, "4B"), (20.0, "4B")],
)
def test_solid_new_bands(d: float, expected: str) -> None:
    assert solid(d, new=True).category == expected


@pytest.mark.parametrize("d, expected", [(5.0, "4A"), (7.9, "4A"), (8.0, "4B"), (16.0, "4B")])
def test_solid_growing_bands(d: float, expected: str) -> None:
    r = grown("solid", d, d - 2.0)
    assert r.growth is True and r.status == "growing"
    assert r.category == expected


@pytest.mark.parametrize(
    "prior, current, days, growing",
    [
        (6.0, 7.5, 365, False),  # exactly 1.5 mm: not > 1.5
        (6.0, 7.6, 365, True),
        (6.1, 7.6, 365, False),  # 7.6 - 6.1 = 1.4999999999999991 in floats, 1.5 exactly here
        (6.1, 7.7, 365, True),  # 1.6000000000000005 in floats
        (5.3, 6.8, 365, False),
        (6.0, 7.6, 366, True),  # 12 months includes a leap year
        (6.0, 7.51, 365, True),  # not rounded: 1.51 > 1.5
        (6.04, 7.54, 365, False),  # 1.5 exactly
        (6.0, 7.6, 367, False),  # longer than 12 months: slow growth
        (6.0, 5.0, 100, False),
    ],
)
def test_growth_definition(prior: float, current: float, days: float, growing: bool) -> None:
    r = grown("solid", current, prior, days)
    assert r.growth is growing
    if growing:
        assert r.category == "4A"
    else:
        # Scored on the baseline bands (crossing 6 mm without growth: 3, not 4A).
        assert r.category == ("3" if current >= 6 else "2")
        assert "baseline bands" in r.rationale.text()
    assert "366 days" in r.rationale.text()


def test_crossing_a_threshold_without_growth_uses_baseline_bands() -> None:
    r = grown("solid", 8.2, 7.0, 365)  # crosses 8 mm, grew 1.2 mm
    assert r.growth is False and r.category == "4A"  # 8 to < 15 at baseline; "growing" would be 4B


def test_slow_growth_over_more_than_a_year_is_noted() -> None:
    r = grown("solid", 9.0, 6.0, 500)
    assert r.growth is False and "slow growth" in r.rationale.text()


def test_growth_needs_interval() -> None:
    with pytest.raises(GuidelineInputError, match="interval_days is required"):
        lungrads.assess(Finding(consistency="solid", mean_diameter_mm=7.0, prior_mean_diameter_mm=5.0))


def test_growth_by_volume_equivalent_diameter() -> None:
    # 113.1 mm³ = 6.0 mm sphere; 268.1 mm³ = 8.0 mm: +2.0 mm within a year.
    r = lungrads.assess(Finding(consistency="solid", volume_mm3=268.1, prior_volume_mm3=113.1, interval_days=300))
    assert r.growth is True and r.category == "4B"
    assert "volume-equivalent" in r.rationale.text()


def test_diameter_is_compared_as_measured_never_rounded() -> None:
    assert solid(7.96, baseline=True).category == "3"  # not rounded up to 8.0
    assert solid(7.999, baseline=True).category == "3"
    assert solid(5.95, baseline=True).category == "2"
    assert solid(5.5, baseline=True).category == "2"  # Fleischner would round this to 6
    assert solid(8.0, baseline=True).category == "4A"


@pytest.mark.parametrize(
    "volume, baseline_cat, new_cat",
    [(33.9, "2", "2"), (34.0, "2", "3"), (112.9, "2", "3"), (113.0, "3", "4A"), (267.9, "3", "4A"),
     (268.0, "4A", "4B"), (1766.0, "4A", "4B"), (1767.0, "4B", "4B")],
)
def test_solid_volume_alternatives(volume: float, baseline_cat: str, new_cat: str) -> None:
    assert cat(consistency="solid", volume_mm3=volume, baseline=True) == baseline_cat
    assert cat(consistency="solid", volume_mm3=volume, new=True) == new_cat
    assert "volume otherwise" in lungrads.assess(Finding(consistency="solid", volume_mm3=volume)).rationale.text()


def test_diameter_wins_over_volume() -> None:
    assert cat(consistency="solid", mean_diameter_mm=5.0, volume_mm3=300.0, baseline=True) == "2"


# --- part-solid ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total, solid_part, expected",
    [
        (5.9, 4.0, "2"),  # < 6 mm total at baseline
        (6.0, 1.0, "3"),
        (10.0, 5.9, "3"),
        (10.0, 6.0, "4A"),
        (10.0, 7.9, "4A"),
        (10.0, 8.0, "4B"),
        (20.0, 12.0, "4B"),
    ],
)
def test_part_solid_baseline(total: float, solid_part: float, expected: str) -> None:
    assert cat(consistency="part_solid", mean_diameter_mm=total, solid_component_mm=solid_part, baseline=True) == expected


@pytest.mark.parametrize(
    "total, solid_part, expected",
    [
        (5.9, 3.9, "3"),  # convention: new < 6 mm total with solid < 4 mm -> 3
        (3.0, 0.5, "3"),
        (6.0, 3.9, "4A"),
        (12.0, 3.9, "4A"),
        (5.0, 4.0, "4B"),  # new solid component >= 4 mm
        (12.0, 4.0, "4B"),
    ],
)
def test_part_solid_new(total: float, solid_part: float, expected: str) -> None:
    r = lungrads.assess(Finding(consistency="part_solid", mean_diameter_mm=total, solid_component_mm=solid_part, new=True))
    assert r.category == expected
    if expected == "3":
        assert "A new part-solid nodule < 6 mm total with solid part < 4 mm is category 3" in r.rationale.text()


@pytest.mark.parametrize("solid_part, prior_solid, expected", [(3.9, 2.0, "4A"), (4.0, 2.0, "4B"), (6.0, 4.4, "4B")])
def test_part_solid_growing_solid_component(solid_part: float, prior_solid: float, expected: str) -> None:
    r = lungrads.assess(Finding(consistency="part_solid", mean_diameter_mm=12.0, prior_mean_diameter_mm=12.0,
                                solid_component_mm=solid_part, prior_solid_component_mm=prior_solid, interval_days=360))
    assert r.growth is True and r.category == expected


def test_part_solid_new_solid_component_in_a_ground_glass_nodule_is_growth() -> None:
    r = lungrads.assess(Finding(consistency="part_solid", mean_diameter_mm=12.0, prior_mean_diameter_mm=12.0,
                                solid_component_mm=2.0, prior_solid_component_mm=0.0, interval_days=360))
    assert r.growth is True and r.category == "4A"
    assert "new solid component" in r.rationale.text()


def test_part_solid_total_growth_with_stable_solid_part_is_not_growth() -> None:
    r = lungrads.assess(Finding(consistency="part_solid", mean_diameter_mm=14.0, prior_mean_diameter_mm=10.0,
                                solid_component_mm=3.0, prior_solid_component_mm=3.0, interval_days=360))
    assert r.growth is False and r.category == "3"


def test_part_solid_needs_solid_component_when_it_matters() -> None:
    with pytest.raises(GuidelineInputError, match="solid_component_mm is required"):
        lungrads.assess(Finding(consistency="part_solid", mean_diameter_mm=8.0, baseline=True))
    assert cat(consistency="part_solid", mean_diameter_mm=5.0, baseline=True) == "2"


# --- ground-glass -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, expected",
    [
        (dict(mean_diameter_mm=29.9, baseline=True), "2"),
        (dict(mean_diameter_mm=29.9, new=True), "2"),
        (dict(mean_diameter_mm=29.9, prior_mean_diameter_mm=20.0, interval_days=300), "2"),  # growing < 30
        (dict(mean_diameter_mm=30.0, baseline=True), "3"),
        (dict(mean_diameter_mm=30.0, new=True), "3"),
        (dict(mean_diameter_mm=31.0, prior_mean_diameter_mm=30.0, interval_days=300), "2"),  # stable/slow
        (dict(mean_diameter_mm=33.0, prior_mean_diameter_mm=31.0, interval_days=300), "3"),  # convention
        (dict(volume_mm3=14136.0, baseline=True), "2"),
        (dict(volume_mm3=14137.0, baseline=True), "3"),
    ],
)
def test_ground_glass(kw: dict, expected: str) -> None:
    assert cat(consistency="ground_glass", **kw) == expected


def test_growing_large_ground_glass_convention_is_shown() -> None:
    r = grown("ground_glass", 33.0, 31.0, 300)
    assert "ground-glass nodule >= 30 mm that meets the growth definition is category 3" in r.rationale.text()


# --- juxtapleural / perifissural --------------------------------------------------------------------


@pytest.mark.parametrize("location", ["juxtapleural", "perifissural"])
@pytest.mark.parametrize("shape", ["oval", "lentiform", "triangular"])
def test_juxtapleural_benign_morphology_is_2(location: str, shape: str) -> None:
    r = solid(9.9, baseline=True, location=location, shape=shape, margins="smooth")
    assert r.category == "2" and location in r.rationale.text()


@pytest.mark.parametrize(
    "kw, expected",
    [
        (dict(mean_diameter_mm=10.0, shape="oval", margins="smooth"), "4A"),  # >= 10 mm: solid bands
        (dict(mean_diameter_mm=9.0, shape="round", margins="smooth"), "4A"),
        (dict(mean_diameter_mm=9.0, shape="oval", margins="lobulated"), "4A"),
        (dict(mean_diameter_mm=9.0, shape="oval"), "4A"),  # margins not stated
        (dict(volume_mm3=523.0, shape="oval", margins="smooth"), "2"),
        (dict(volume_mm3=524.0, shape="oval", margins="smooth"), "4A"),
    ],
)
def test_juxtapleural_rule_needs_every_feature(kw: dict, expected: str) -> None:
    r = lungrads.assess(Finding(consistency="solid", baseline=True, location="juxtapleural", **kw))
    assert r.category == expected
    if expected != "2":
        assert "Juxtapleural benign-morphology rule not applied" in r.rationale.text()


def test_juxtapleural_new_is_2_but_growing_is_scored_as_solid() -> None:
    features = dict(location="perifissural", shape="lentiform", margins="smooth")
    assert solid(7.0, new=True, **features).category == "2"
    assert grown("solid", 7.0, 5.0, 300, **features).category == "4A"


def test_juxtapleural_rule_is_for_solid_nodules_only() -> None:
    assert cat(consistency="part_solid", mean_diameter_mm=9.0, solid_component_mm=7.0, baseline=True,
               location="juxtapleural", shape="oval", margins="smooth") == "4A"


# --- stepped management -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prior_category, status, d, expected",
    [
        ("4A", "stable_at_3_month", 9.0, "3"),
        ("4A", "stable_at_6_month", 9.0, "3"),  # convention
        ("3", "stable_at_6_month", 7.0, "2"),
        ("3", "stable_at_3_month", 4.5, "3"),  # convention: not yet 6 months stable
        ("3S", "stable_at_6_month", 7.0, "2"),
        ("2", "stable_at_6_month", 9.0, "4A"),  # no step for 2: current findings
    ],
)
def test_stepped_management(prior_category: str, status: str, d: float, expected: str) -> None:
    r = solid(d, prior_category=prior_category, status_vs_prior=status)
    assert r.category == expected


def test_stepped_management_contradicted_by_growth_is_an_error() -> None:
    with pytest.raises(GuidelineInputError, match="show growth"):
        lungrads.assess(Finding(consistency="solid", mean_diameter_mm=9.0, prior_mean_diameter_mm=7.0,
                                interval_days=90, prior_category="4A", status_vs_prior="stable_at_3_month"))


def test_status_vs_prior_needs_prior_category() -> None:
    with pytest.raises(GuidelineInputError, match="needs prior_category"):
        Finding(consistency="solid", mean_diameter_mm=9.0, status_vs_prior="stable_at_3_month")


# --- airway nodules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, expected",
    [
        (dict(airway_level="subsegmental", baseline=True), "2"),
        (dict(airway_level="subsegmental", new=True), "2"),
        (dict(airway_level="subsegmental", prior_category="2", status_vs_prior="stable_at_6_month"), "2"),
        (dict(airway_level="subsegmental", mean_diameter_mm=6.0, prior_mean_diameter_mm=4.0, interval_days=200), "3"),
        (dict(airway_level="segmental_or_more_proximal", baseline=True), "4A"),
        (dict(airway_level="segmental_or_more_proximal", new=True), "4A"),
        (dict(airway_level="segmental_or_more_proximal", prior_category="4A", status_vs_prior="stable_at_3_month"), "4B"),
        (dict(airway_level="segmental_or_more_proximal", mean_diameter_mm=6.0, prior_mean_diameter_mm=4.0,
              interval_days=90), "4B"),
    ],
)
def test_airway_nodules(kw: dict, expected: str) -> None:
    assert cat(finding_type="airway_nodule", **kw) == expected


def test_airway_nodule_needs_level() -> None:
    with pytest.raises(GuidelineInputError, match="airway_level is required"):
        lungrads.assess(Finding(finding_type="airway_nodule"))


# --- atypical cysts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cyst_type, change, expected",
    [
        ("thick_walled", None, "4A"),
        ("thick_walled", "growing_cystic_component", "3"),
        ("thick_walled", "growing_wall_thickness_or_nodularity", "4B"),
        ("thick_walled", "increased_loculation", "4A"),  # became multilocular
        ("thick_walled", "new_or_increased_opacity", "4B"),
        ("multilocular", None, "4A"),
        ("multilocular", "growing_cystic_component", "4B"),
        ("multilocular", "increased_loculation", "4B"),
        ("multilocular", "new_or_increased_opacity", "4B"),
        ("multilocular", "growing_wall_thickness_or_nodularity", "4B"),
    ],
)
def test_atypical_cysts(cyst_type: str, change: str | None, expected: str) -> None:
    assert cat(finding_type="atypical_cyst", cyst_type=cyst_type, change=change) == expected


def test_growing_multilocular_cyst_by_measurement_and_cyst_stepped_down() -> None:
    assert cat(finding_type="atypical_cyst", cyst_type="multilocular", mean_diameter_mm=20.0,
               prior_mean_diameter_mm=17.0, interval_days=300) == "4B"
    assert cat(finding_type="atypical_cyst", cyst_type="thick_walled", prior_category="4A",
               status_vs_prior="stable_at_3_month") == "3"


def test_cyst_needs_type() -> None:
    with pytest.raises(GuidelineInputError, match="cyst_type is required"):
        lungrads.assess(Finding(finding_type="atypical_cyst"))


# --- categories 0, 1, 2 (benign), 4X and S ------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, months",
    [
        ("prior_ct_being_located", (None, None)),
        ("lungs_not_fully_evaluable", (None, None)),
        ("infectious_or_inflammatory_findings", (1, 3)),
    ],
)
def test_category_0(flag: str, months: tuple) -> None:
    r = lungrads.assess(Finding(finding_type="exam", **{flag: True}))
    assert r.category == "0"
    assert (r.followup_months_min, r.followup_months_max) == months


def test_category_0_flag_overrides_a_nodule_and_says_so() -> None:
    r = solid(20.0, baseline=True, prior_ct_being_located=True)
    assert r.category == "0" and "take precedence" in r.rationale.text()


def test_category_1_no_nodules() -> None:
    r = lungrads.assess(Finding(finding_type="exam"))
    assert r.category == "1" and (r.followup_months_min, r.followup_months_max) == (12, 12)


@pytest.mark.parametrize("calcification", ["complete", "central", "popcorn", "concentric"])
def test_category_1_benign_calcification(calcification: str) -> None:
    assert solid(25.0, baseline=True, calcification=calcification).category == "1"


def test_category_1_fat_and_non_benign_calcification() -> None:
    assert solid(25.0, baseline=True, contains_fat=True).category == "1"
    r = solid(9.0, baseline=True, calcification="eccentric")
    assert r.category == "4A" and "not a benign pattern" in r.rationale.text()


def test_exam_with_nodule_measurements_is_an_error() -> None:
    with pytest.raises(GuidelineInputError, match="exam without nodules"):
        lungrads.assess(Finding(finding_type="exam", mean_diameter_mm=5.0))


def test_category_2_proven_benign() -> None:
    r = solid(20.0, prior_category="4B", workup="proven_benign")
    assert r.category == "2" and "proven benign" in r.rationale.text()


@pytest.mark.parametrize(
    "d, margins, features, expected",
    [
        (7.0, "spiculated", (), "4X"),  # 3 -> 4X
        (9.0, None, ("lymphadenopathy",), "4X"),  # 4A -> 4X
        (16.0, None, ("lymphadenopathy",), "4X"),  # 4B -> 4X
        (5.0, "spiculated", (), "2"),  # 4X is for category 3 or 4 only
    ],
)
def test_category_4x(d: float, margins, features, expected: str) -> None:
    r = solid(d, baseline=True, margins=margins, additional_suspicious_features=features)
    assert r.category == expected
    if expected == "4X":
        assert (r.followup_months_min, r.followup_months_max) == (None, None)


def test_ground_glass_doubling_within_a_year_is_4x_when_category_3() -> None:
    r = lungrads.assess(Finding(consistency="ground_glass", mean_diameter_mm=40.0, volume_mm3=30000.0,
                                prior_volume_mm3=15000.0, interval_days=300, new=None))
    assert r.category == "4X" and "doubled in volume" in r.rationale.text()


def test_s_modifier_is_appended() -> None:
    r = solid(7.0, baseline=True, significant_other_finding=True)
    assert r.category == "3S" and r.management.endswith("as appropriate.")
    assert lungrads.assess(Finding(finding_type="exam", significant_other_finding=True)).category == "1S"
    assert solid(7.0, baseline=True, margins="spiculated", significant_other_finding=True).category == "4XS"


# --- management and interval per category ----------------------------------------------------------


@pytest.mark.parametrize(
    "d, expected, months, pet",
    [
        (5.0, "2", (12, 12), False),
        (7.0, "3", (6, 6), False),
        (9.0, "4A", (3, 3), True),
        (15.0, "4B", (None, None), True),
    ],
)
def test_management_per_category(d: float, expected: str, months: tuple, pet: bool) -> None:
    r = solid(d, baseline=True)
    assert r.category == expected
    assert (r.followup_months_min, r.followup_months_max) == months
    assert ("PET/CT may be considered" in r.management) is pet
    d_out = r.to_dict()
    for key in ("category", "management", "followup_months_min", "followup_months_max", "growth"):
        assert key in d_out


def test_4a_pet_note_for_solid_component_of_8mm() -> None:
    r = lungrads.assess(Finding(consistency="part_solid", mean_diameter_mm=12.0, solid_component_mm=6.5, baseline=True))
    assert r.category == "4A" and "PET/CT" not in r.management


@pytest.mark.parametrize(
    "before, after",
    [("2", "4A"), ("3", "4X"), ("4A", "4X"), ("4B", "4X"), ("1", "1"), ("0", "0")],
)
def test_fast_vdt_escalation(before: str, after: str) -> None:
    findings = {
        "0": Finding(finding_type="exam", prior_ct_being_located=True),
        "1": Finding(finding_type="exam"),
        "2": Finding(consistency="solid", mean_diameter_mm=5.0, baseline=True),
        "3": Finding(consistency="solid", mean_diameter_mm=7.0, baseline=True),
        "4A": Finding(consistency="solid", mean_diameter_mm=9.0, baseline=True),
        "4B": Finding(consistency="solid", mean_diameter_mm=16.0, baseline=True),
    }
    r = lungrads.assess(findings[before])
    assert r.category == before
    e = lungrads.escalate_for_fast_growth(r, 200.0)
    assert e.category == after
    if after != before:
        assert "doubling time < 400 days" in e.rationale.text()


@pytest.mark.parametrize(
    "finding",
    [
        Finding(consistency="solid", mean_diameter_mm=9.0, workup="proven_benign"),
        Finding(finding_type="airway_nodule", airway_level="subsegmental"),
        Finding(finding_type="atypical_cyst", cyst_type="thick_walled"),
    ],
)
def test_fast_vdt_does_not_escalate_benign_airway_or_cyst(finding: Finding) -> None:
    r = lungrads.assess(finding)
    assert lungrads.escalate_for_fast_growth(r, 100.0) is r


def test_category_rank_orders_suspicion() -> None:
    order = ["1", "2", "3", "4A", "4B", "4X", "0"]
    assert sorted(order, key=lungrads.category_rank) == order
    assert lungrads.category_rank("4AS") == lungrads.category_rank("4A")


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(mean_diameter_mm=5.0), "consistency is required"),
        (dict(consistency="solid"), "mean_diameter_mm or volume_mm3"),
        (dict(consistency="solid", mean_diameter_mm=5.0, baseline=True, new=True), "cannot both be true"),
        (dict(consistency="solid", mean_diameter_mm=5.0, new=True, prior_mean_diameter_mm=4.0), "prior measurements"),
        (dict(consistency="part_solid", mean_diameter_mm=5.0, solid_component_mm=6.0), "larger than mean_diameter_mm"),
        (dict(consistency="solid", mean_diameter_mm=-1.0), "must be > 0"),
        (dict(consistency="solid", mean_diameter_mm=500.0), "<= 300"),
        (dict(consistency="rock", mean_diameter_mm=5.0), "consistency must be one of"),
        (dict(consistency="solid", mean_diameter_mm=5.0, prior_category="5"), "prior_category must be one of"),
    ],
)
def test_bad_input_is_named(kw: dict, words: str) -> None:
    with pytest.raises(GuidelineInputError, match=words):
        lungrads.assess(Finding(**kw))
