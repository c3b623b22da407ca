"""Fleischner Society 2017 recommendations for incidental pulmonary nodules (CLINICAL.md).

``assess(finding)`` returns the table cell's recommendation for one nodule, with applicability
(adults >= 35 years, not screening, no known cancer, not immunocompromised), the first follow-up
interval in months and a rationale. Sizes are the mean diameter rounded to the nearest whole
millimetre, halves up; volume is used when no diameter is given.

"Most suspicious" between nodules is :attr:`FleischnerResult.rank`: a higher rank means a more
urgent recommendation (work-up > CT at 3 months > 3-6 months > 6-12 months > optional > none).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .common import (
    FLEISCHNER_SOURCE,
    GuidelineInputError,
    Rationale,
    SizeThreshold,
    Trace,
    format_value,
    round_half_up,
    to_decimal,
)
from .finding import FIELD_ORDER, Finding

MIN_AGE_YEARS = 35
SIGNIFICANT_GROWTH_MM = Decimal(2)

# Urgency ranks (higher = more suspicious; used to pick the nodule that drives management).
RANK_NONE, RANK_OPTIONAL, RANK_6_12, RANK_3_6, RANK_SUSPICIOUS_3_6, RANK_3_MONTH_WORKUP, RANK_WORKUP = range(7)

# --- conventions (CLINICAL.md requires each to be visible in the rationale when it applies) ------
CONV_ROUNDING = (
    "Fleischner sizes are the mean diameter rounded to the nearest whole millimetre, halves up "
    "(5.5 mm -> 6 mm), before comparison with the thresholds"
)
CONV_VOLUME_BANDS = (
    "With volume only: solid < 100 mm³ = < 6 mm, 100-250 mm³ inclusive = 6-8 mm, > 250 mm³ = > 8 mm; "
    "subsolid 100 mm³ counts as >= 6 mm (the table says < 100 and > 100 mm³)"
)
CONV_AGE_ASSUMED = "Age not given: the patient is assumed to be an adult aged 35 years or more"
CONV_GROWTH = (
    "Growth is the difference of the unrounded mean diameters (and, for part-solid nodules, of the "
    "solid components); >= 2 mm is significant and escalates to the work-up row: consider PET/CT, "
    "tissue sampling or resection, otherwise CT at 3 months"
)
CONV_SOLID_COMPONENT = (
    "The solid-component rules (>= 6 mm: highly suspicious if persistent; > 8 mm: PET/CT, biopsy or "
    "resection) apply to single and multiple part-solid nodules alike, and the solid component is "
    "rounded like the diameter"
)
CONV_FAST_VDT = (
    "A measured volume doubling time < 400 days with significant volume growth (> 25 %) escalates "
    "a Fleischner recommendation to the most urgent interval of the table: CT at 3 months, consider "
    "PET/CT or tissue sampling (Fleischner 2017 itself does not use VDT)"
)


@dataclass(frozen=True)
class _Cell:
    """One cell of the Fleischner table."""

    category: str
    recommendation: str
    followup_months_min: int | None
    followup_months_max: int | None
    rank: int
    optional: bool = False


_NO_FOLLOWUP = "No routine follow-up."
_OPTIONAL_12 = "Optional CT at 12 months."

# Solid nodules: (multiplicity, risk, size band) -> cell.
_SOLID: dict[tuple[str, str, str], _Cell] = {
    ("single", "low", "<6"): _Cell("solid <6 mm single low-risk", _NO_FOLLOWUP, None, None, RANK_NONE),
    ("single", "high", "<6"): _Cell("solid <6 mm single high-risk", _OPTIONAL_12, 12, 12, RANK_OPTIONAL, True),
    ("single", "low", "6-8"): _Cell(
        "solid 6-8 mm single low-risk", "CT at 6-12 months, then consider CT at 18-24 months.", 6, 12, RANK_6_12
    ),
    ("single", "high", "6-8"): _Cell(
        "solid 6-8 mm single high-risk", "CT at 6-12 months, then CT at 18-24 months.", 6, 12, RANK_6_12
    ),
    ("single", "low", ">8"): _Cell(
        "solid >8 mm single low-risk", "Consider CT at 3 months, PET/CT, or tissue sampling.", 3, 3,
        RANK_3_MONTH_WORKUP,
    ),
    ("single", "high", ">8"): _Cell(
        "solid >8 mm single high-risk", "Consider CT at 3 months, PET/CT, or tissue sampling.", 3, 3,
        RANK_3_MONTH_WORKUP,
    ),
    ("multiple", "low", "<6"): _Cell("solid <6 mm multiple low-risk", _NO_FOLLOWUP, None, None, RANK_NONE),
    ("multiple", "high", "<6"): _Cell(
        "solid <6 mm multiple high-risk", _OPTIONAL_12, 12, 12, RANK_OPTIONAL, True
    ),
    ("multiple", "low", "6-8"): _Cell(
        "solid 6-8 mm multiple low-risk", "CT at 3-6 months, then consider CT at 18-24 months.", 3, 6, RANK_3_6
    ),
    ("multiple", "high", "6-8"): _Cell(
        "solid 6-8 mm multiple high-risk", "CT at 3-6 months, then CT at 18-24 months.", 3, 6, RANK_3_6
    ),
    ("multiple", "low", ">8"): _Cell(
        "solid >8 mm multiple low-risk", "CT at 3-6 months, then consider CT at 18-24 months.", 3, 6, RANK_3_6
    ),
    ("multiple", "high", ">8"): _Cell(
        "solid >8 mm multiple high-risk", "CT at 3-6 months, then CT at 18-24 months.", 3, 6, RANK_3_6
    ),
}

# Subsolid nodules: (kind, size band) -> cell; kind = ground_glass | part_solid (single) | multiple.
_SUBSOLID: dict[tuple[str, str], _Cell] = {
    ("ground_glass", "<6"): _Cell("ground-glass <6 mm single", _NO_FOLLOWUP, None, None, RANK_NONE),
    ("ground_glass", ">=6"): _Cell(
        "ground-glass >=6 mm single",
        "CT at 6-12 months to confirm persistence, then CT every 2 years until 5 years.",
        6, 12, RANK_6_12,
    ),
    ("part_solid", "<6"): _Cell("part-solid <6 mm single", _NO_FOLLOWUP, None, None, RANK_NONE),
    ("part_solid", ">=6"): _Cell(
        "part-solid >=6 mm single",
        "CT at 3-6 months to confirm persistence; if unchanged and the solid component remains < 6 mm, "
        "annual CT for 5 years.",
        3, 6, RANK_3_6,
    ),
    ("multiple", "<6"): _Cell(
        "subsolid <6 mm multiple", "CT at 3-6 months; if stable, consider CT at 2 and 4 years.", 3, 6, RANK_3_6
    ),
    ("multiple", ">=6"): _Cell(
        "subsolid >=6 mm multiple",
        "CT at 3-6 months; subsequent management based on the most suspicious nodule.",
        3, 6, RANK_3_6,
    ),
}
_SOLID_COMPONENT_6 = _Cell(
    "part-solid, solid part >=6 mm",
    "CT at 3-6 months to confirm persistence; a persistent part-solid nodule with a solid component "
    ">= 6 mm is highly suspicious.",
    3, 6, RANK_SUSPICIOUS_3_6,
)
_SOLID_COMPONENT_8 = _Cell(
    "part-solid, solid part >8 mm", "PET/CT, biopsy or resection.", None, None, RANK_WORKUP
)
_GROWTH = _Cell(
    "significant growth (>=2 mm)",
    "Significant growth (>= 2 mm): consider PET/CT, tissue sampling or resection; if not pursued, CT at 3 months.",
    3, 3, RANK_3_MONTH_WORKUP,
)
_FAST_VDT = _Cell(
    "fast growth (VDT <400 days)",
    "Fast growth (volume doubling time < 400 days): CT at 3 months; consider PET/CT or tissue sampling.",
    3, 3, RANK_3_MONTH_WORKUP,
)


@dataclass(frozen=True)
class FleischnerResult:
    """Fleischner 2017 recommendation for one nodule (fields of the JSON contract plus extras)."""

    applicable: bool
    reason: str | None  # why not applicable; None when applicable
    rounded_diameter_mm: int | None
    category: str  # the table cell, e.g. "solid 6-8 mm single low-risk"
    recommendation: str
    followup_months_min: int | None  # first follow-up CT; None when none (or work-up instead)
    followup_months_max: int | None
    optional: bool | None
    rank: int
    significant_growth: bool | None  # None when no prior diameter was given
    growth_mm: Decimal | None
    rationale: Rationale

    def __post_init__(self) -> None:
        if (self.followup_months_min is None) != (self.followup_months_max is None):
            raise ValueError("followup_months_min and followup_months_max must both be set or both be None")
        if self.followup_months_min is not None and self.followup_months_min > self.followup_months_max:
            raise ValueError("followup_months_min must not exceed followup_months_max")

    @property
    def workup(self) -> bool:
        """True when the recommendation is work-up rather than (or besides) a CT interval."""
        return self.rank >= RANK_3_MONTH_WORKUP

    def to_dict(self) -> dict[str, Any]:
        return {
            "applicable": self.applicable,
            "reason": self.reason,
            "rounded_diameter_mm": self.rounded_diameter_mm,
            "category": self.category,
            "recommendation": self.recommendation,
            "followup_months_min": self.followup_months_min,
            "followup_months_max": self.followup_months_max,
            "optional": self.optional,
            "significant_growth": self.significant_growth,
            "growth_mm": None if self.growth_mm is None else float(round_half_up(self.growth_mm, 1)),
            "rationale": self.rationale.text(),
        }


def not_applicable_reasons(finding: Finding) -> list[str]:
    """Why Fleischner 2017 does not apply to this patient (empty list = it applies)."""
    reasons = []
    if finding.age_years is not None and finding.age_years < MIN_AGE_YEARS:
        reasons.append(f"patient younger than {MIN_AGE_YEARS} years (age {finding.age_years:g})")
    if finding.screening:
        reasons.append("lung-cancer screening examination (use Lung-RADS)")
    if finding.known_cancer:
        reasons.append("known primary cancer (nodules may be metastases)")
    if finding.immunocompromised:
        reasons.append("immunocompromised patient (nodules may be infection)")
    return reasons


def assess(finding: Finding) -> FleischnerResult:
    """Apply Fleischner 2017 to one nodule; raises :class:`GuidelineInputError` for missing inputs."""
    trace = Trace(FLEISCHNER_SOURCE, order=FIELD_ORDER)
    for name in ("age_years", "screening", "known_cancer", "immunocompromised"):
        trace.use(name, getattr(finding, name))
    rounded = None if finding.mean_diameter_mm is None else int(round_half_up(finding.mean_diameter_mm))

    reasons = not_applicable_reasons(finding)
    if reasons:
        reason = "; ".join(reasons)
        return FleischnerResult(
            applicable=False, reason=reason, rounded_diameter_mm=rounded, category="not applicable",
            recommendation=f"Fleischner 2017 does not apply: {reason}.", followup_months_min=None,
            followup_months_max=None, optional=None, rank=RANK_NONE, significant_growth=None,
            growth_mm=None, rationale=trace.rationale(f"Fleischner 2017 not applicable: {reason}"),
        )
    if finding.age_years is None:
        trace.convention(CONV_AGE_ASSUMED)

    consistency = _require(finding, "consistency")
    multiplicity = _require(finding, "multiplicity")
    trace.use("consistency", consistency)
    trace.use("multiplicity", multiplicity)
    if consistency == "solid":
        risk = _require(finding, "risk")
        trace.use("risk", risk)
        cell = _SOLID[(multiplicity, risk, _solid_band(finding, trace))]
    else:
        cell = _subsolid_cell(finding, consistency, multiplicity, trace)

    growth_mm, significant = _growth(finding, trace)
    if significant and cell.rank < _GROWTH.rank:
        trace.note(f"Table cell before growth: {cell.category} ({cell.recommendation.rstrip('.')})")
        cell = _GROWTH
    return FleischnerResult(
        applicable=True, reason=None, rounded_diameter_mm=rounded, category=cell.category,
        recommendation=cell.recommendation, followup_months_min=cell.followup_months_min,
        followup_months_max=cell.followup_months_max, optional=cell.optional, rank=cell.rank,
        significant_growth=significant, growth_mm=growth_mm,
        rationale=trace.rationale(f"Fleischner 2017, {cell.category}: {cell.recommendation}"),
    )


def escalate_for_fast_growth(result: FleischnerResult, vdt_days: float) -> FleischnerResult:
    """Apply :data:`CONV_FAST_VDT` (caller has checked VDT < 400 d with significant growth)."""
    if not result.applicable or result.rank >= _FAST_VDT.rank:
        return result
    r = result.rationale
    rationale = dataclasses.replace(
        r,
        rule=f"Fleischner 2017, {_FAST_VDT.category}: {_FAST_VDT.recommendation}",
        notes=r.notes + (f"Table cell before escalation: {result.category} ({result.recommendation.rstrip('.')})",
                         f"Measured volume doubling time {float(round_half_up(vdt_days, 1)):g} days"),
        conventions=r.conventions + (CONV_FAST_VDT,),
    )
    return dataclasses.replace(
        result, category=_FAST_VDT.category, recommendation=_FAST_VDT.recommendation,
        followup_months_min=_FAST_VDT.followup_months_min, followup_months_max=_FAST_VDT.followup_months_max,
        optional=False, rank=_FAST_VDT.rank, rationale=rationale,
    )


def size_thresholds(consistency: str) -> tuple[SizeThreshold, ...]:
    """The size thresholds that change the Fleischner cell, in increasing order (for forecasts)."""
    six = SizeThreshold(
        "Fleischner 6 mm (after rounding; 100 mm³)",
        lambda d: round_half_up(d) >= 6,
        lambda v: v >= 100.0,
    )
    if consistency != "solid":
        return (six,)
    eight = SizeThreshold(
        "Fleischner >8 mm (after rounding; >250 mm³)",
        lambda d: round_half_up(d) > 8,
        lambda v: v > 250.0,
    )
    return (six, eight)


def _require(finding: Finding, name: str) -> Any:
    value = getattr(finding, name)
    if value is None:
        raise GuidelineInputError(f"{name} is required for Fleischner 2017")
    return value


def _size_inputs(finding: Finding, trace: Trace) -> tuple[int | None, float | None]:
    """(rounded diameter, volume): the diameter when given, the volume otherwise."""
    if finding.mean_diameter_mm is not None:
        rounded = int(round_half_up(finding.mean_diameter_mm))
        trace.use("mean_diameter_mm", finding.mean_diameter_mm, f"{format_value(finding.mean_diameter_mm)} (rounded to {rounded} mm)")
        trace.convention(CONV_ROUNDING)
        return rounded, None
    if finding.volume_mm3 is not None:
        trace.use("volume_mm3", finding.volume_mm3)
        trace.convention(CONV_VOLUME_BANDS)
        return None, float(finding.volume_mm3)
    raise GuidelineInputError("mean_diameter_mm or volume_mm3 is required for Fleischner 2017")


def _solid_band(finding: Finding, trace: Trace) -> str:
    rounded, volume = _size_inputs(finding, trace)
    if rounded is not None:
        return "<6" if rounded < 6 else "6-8" if rounded <= 8 else ">8"
    assert volume is not None
    return "<6" if volume < 100.0 else "6-8" if volume <= 250.0 else ">8"


def _subsolid_cell(finding: Finding, consistency: str, multiplicity: str, trace: Trace) -> _Cell:
    rounded, volume = _size_inputs(finding, trace)
    large = rounded >= 6 if rounded is not None else volume is not None and volume >= 100.0
    band = ">=6" if large else "<6"
    cell = _SUBSOLID[("multiple" if multiplicity == "multiple" else consistency, band)]
    if consistency == "part_solid" and large:
        # The solid component decides only for part-solid nodules of >= 6 mm (it cannot be larger).
        if finding.solid_component_mm is None:
            raise GuidelineInputError("solid_component_mm is required for a part-solid nodule >= 6 mm")
        solid = int(round_half_up(finding.solid_component_mm))
        trace.use("solid_component_mm", finding.solid_component_mm,
                  f"{format_value(finding.solid_component_mm)} (rounded to {solid} mm)")
        if solid >= 6:
            trace.convention(CONV_SOLID_COMPONENT)
            cell = _SOLID_COMPONENT_8 if solid > 8 else _SOLID_COMPONENT_6
    return cell


def _growth(finding: Finding, trace: Trace) -> tuple[Decimal | None, bool | None]:
    """Mean-diameter growth since the prior (and solid-component growth); >= 2 mm is significant."""
    if finding.prior_mean_diameter_mm is None or finding.mean_diameter_mm is None:
        if finding.prior_volume_mm3 is not None:
            trace.note("Fleischner growth needs diameters; the volume change is assessed by the VDT rules")
        return None, None
    trace.use("prior_mean_diameter_mm", finding.prior_mean_diameter_mm)
    growth = to_decimal(finding.mean_diameter_mm) - to_decimal(finding.prior_mean_diameter_mm)
    significant = growth >= SIGNIFICANT_GROWTH_MM
    if (
        finding.consistency == "part_solid"
        and finding.solid_component_mm is not None
        and finding.prior_solid_component_mm is not None
    ):
        trace.use("solid_component_mm", finding.solid_component_mm)
        trace.use("prior_solid_component_mm", finding.prior_solid_component_mm)
        solid_growth = to_decimal(finding.solid_component_mm) - to_decimal(finding.prior_solid_component_mm)
        if solid_growth >= SIGNIFICANT_GROWTH_MM:
            significant = True
            trace.note(f"Solid component grew by {format_value(float(solid_growth))} mm")
    trace.note(f"Mean diameter changed by {float(growth):+.2f} mm since the prior ({'significant' if significant else 'not significant'} growth)")
    trace.convention(CONV_GROWTH)
    return growth, significant
