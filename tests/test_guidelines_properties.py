"""Property tests (hypothesis): monotonicity in size, VDT invariants, rounding, reproducible output."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from reports.guidelines import Finding, NoduleInput, StudyContext, fleischner, lungrads, recommend, volumetric
from reports.guidelines.common import round_half_up
from reports.guidelines.contract import answer_line, dumps

settings.register_profile("guidelines", max_examples=150, deadline=None)
settings.load_profile("guidelines")

# Diameters written to 0.1 mm or 0.01 mm, as measurements are reported.
diameters = st.one_of(
    st.integers(min_value=1, max_value=600).map(lambda n: n / 10),
    st.integers(min_value=100, max_value=6000).map(lambda n: n / 100),
)
volumes = st.floats(min_value=1.0, max_value=5e4, allow_nan=False, allow_infinity=False)
intervals = st.integers(min_value=1, max_value=2000)


def part_of(d: float, fraction: float) -> float:
    """A solid component of ``d`` to 0.1 mm, never larger than ``d``."""
    return min(d, math.floor(d * fraction * 10) / 10)


def interval_key(r: fleischner.FleischnerResult) -> float:
    """Time to the next action: work-up = 0, no follow-up = infinity."""
    if r.workup and r.followup_months_min is None:
        return 0.0
    return math.inf if r.followup_months_min is None else float(r.followup_months_min)


@given(
    d1=diameters, d2=diameters,
    consistency=st.sampled_from(["solid", "ground_glass", "part_solid"]),
    multiplicity=st.sampled_from(["single", "multiple"]),
    risk=st.sampled_from(["low", "high"]),
    solid_fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_fleischner_larger_nodule_never_gets_a_longer_interval(d1, d2, consistency, multiplicity, risk, solid_fraction) -> None:
    small, large = sorted((d1, d2))
    solid_part = part_of(small, solid_fraction) if consistency == "part_solid" else None

    def run(d: float) -> fleischner.FleischnerResult:
        return fleischner.assess(Finding(consistency=consistency, mean_diameter_mm=d, solid_component_mm=solid_part,
                                         multiplicity=multiplicity, risk=risk))

    a, b = run(small), run(large)
    assert interval_key(b) <= interval_key(a)
    assert b.rank >= a.rank


@given(
    d1=diameters, d2=diameters,
    consistency=st.sampled_from(["solid", "ground_glass", "part_solid"]),
    status=st.sampled_from(["baseline", "new", "growing", "existing"]),
    solid_fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_lungrads_category_monotone_in_size(d1, d2, consistency, status, solid_fraction) -> None:
    small, large = sorted((d1, d2))
    solid_part = part_of(small, solid_fraction) if consistency == "part_solid" else None

    def run(d: float) -> lungrads.LungRadsResult:
        kw: dict = {"baseline": True} if status == "baseline" else {"new": True} if status == "new" else {}
        if status == "growing":
            kw.update(prior_mean_diameter_mm=max(0.1, round(small - 2.0, 1)), interval_days=300)
            if consistency == "part_solid":
                kw.update(prior_solid_component_mm=0.0)
        return lungrads.assess(Finding(consistency=consistency, mean_diameter_mm=d, solid_component_mm=solid_part, **kw))

    a, b = run(small), run(large)
    if status == "growing" and (a.growth is not b.growth):
        return  # a different status, not the same question
    assert b.rank >= a.rank
    key = lambda r: math.inf if r.followup_months_min is None and r.base_category in ("1", "2") else (  # noqa: E731
        0 if r.followup_months_min is None else r.followup_months_min)
    assert key(b) <= key(a)


@given(total=diameters, s1=st.floats(min_value=0, max_value=1), s2=st.floats(min_value=0, max_value=1),
       new=st.booleans())
def test_lungrads_part_solid_monotone_in_solid_component(total, s1, s2, new) -> None:
    lo, hi = sorted((part_of(total, s1), part_of(total, s2)))

    def run(s: float) -> str:
        return lungrads.assess(Finding(consistency="part_solid", mean_diameter_mm=total, solid_component_mm=min(s, total),
                                       new=new or None, baseline=None if new else True)).category

    assert lungrads.category_rank(run(hi)) >= lungrads.category_rank(run(lo))


@given(v1=volumes, factor=st.floats(min_value=0.2, max_value=20.0), days=intervals,
       scale=st.floats(min_value=0.01, max_value=10.0))
@example(v1=1.5, factor=1.0000000000000002, days=1, scale=3.0)  # found by hypothesis: a ratio one epsilon above 1
def test_vdt_invariants(v1, factor, days, scale) -> None:
    v2 = v1 * factor
    r = volumetric.assess(Finding(prior_volume_mm3=v1, volume_mm3=v2, interval_days=days))
    assert r.vdt_band in volumetric.VDT_BANDS
    if r.vdt_days is None:
        assert r.vdt_band in ("no_growth", "decreasing")
        assert v2 <= v1
    else:
        assert r.vdt_days > 0 and v2 > v1
        expected = days * math.log(2) / math.log(v2 / v1)
        assert abs(float(r.vdt_days) - expected) <= 0.05 + 1e-9 * expected
        # The band always agrees with the reported number.
        band = "<400" if r.vdt_days < 400 else "400-600" if r.vdt_days <= 600 else ">600"
        assert r.vdt_band == band
    assert r.significant_growth == ((Decimal(repr(v2)) - Decimal(repr(v1))) / Decimal(repr(v1)) * 100 > 25)
    # Same ratio at another scale: same VDT (to the reported precision, barring a rounding tie, and to
    # the precision of the ratio itself: scaling rounds each volume by up to one float epsilon, which
    # matters when the ratio is within a few epsilons of 1 – a VDT of ~1e15 days)
    r2 = volumetric.assess(Finding(prior_volume_mm3=v1 * scale, volume_mm3=v2 * scale, interval_days=days))
    if r.vdt_days is not None and r2.vdt_days is not None:
        ratio_precision = 4.0 * sys.float_info.epsilon / abs(math.log(v2 / v1))
        assert abs(r.vdt_days - r2.vdt_days) <= Decimal("0.1") + r.vdt_days * Decimal(repr(ratio_precision))


@given(n=st.integers(min_value=0, max_value=500), frac=st.integers(min_value=0, max_value=99))
def test_round_half_up_matches_the_definition(n, frac) -> None:
    x = n + frac / 100
    r = round_half_up(x)
    assert r == (n + 1 if frac >= 50 else n)


@given(
    sizes=st.lists(diameters, min_size=1, max_size=5),
    extra=diameters,
    screening=st.booleans(),
)
def test_adding_a_nodule_never_makes_the_study_less_urgent_lungrads(sizes, extra, screening) -> None:
    context = StudyContext(study_date=dt.date(2026, 1, 1), screening=True, baseline=True)
    nodules = [NoduleInput(f"N{i}", "solid", mean_diameter_mm=d) for i, d in enumerate(sizes)]
    before = recommend(nodules, context)
    after = recommend(nodules + [NoduleInput("extra", "solid", mean_diameter_mm=extra)], context)
    assert lungrads.category_rank(after.category) >= lungrads.category_rank(before.category)


finding_inputs = st.fixed_dictionaries(
    {"consistency": st.sampled_from(["solid", "part_solid", "ground_glass"]), "mean_diameter_mm": diameters},
    optional={
        "multiplicity": st.sampled_from(["single", "multiple"]),
        "risk": st.sampled_from(["low", "high"]),
        "baseline": st.booleans(),
        "volume_mm3": volumes,
        "prior_volume_mm3": volumes,
        "interval_days": intervals,
        "margins": st.sampled_from(["smooth", "spiculated"]),
    },
)


@given(guideline=st.sampled_from(["fleischner2017", "lungrads2022", "vdt"]), data=finding_inputs,
       ident=st.one_of(st.integers(), st.text(max_size=8)))
def test_contract_output_is_reproducible_and_well_formed(guideline, data, ident) -> None:
    line = json.dumps({"id": ident, "guideline": guideline, "input": data})
    out1, ok1 = answer_line(line)
    out2, ok2 = answer_line(line)
    assert dumps(out1) == dumps(out2) and ok1 == ok2
    assert out1["id"] == ident and next(iter(out1)) == "id"
    assert ("error" in out1) is (not ok1)
    parsed = json.loads(dumps(out1))
    for value in parsed.values():
        if isinstance(value, float):
            assert value == round(value, 1)  # no binary noise
