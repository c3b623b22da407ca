"""ACR Lung-RADS v2022 categories for lung-cancer screening CT (CLINICAL.md).

``assess(finding)`` scores one finding (a nodule, an airway nodule, an atypical cyst or the exam
itself) and returns its category (0, 1, 2, 3, 4A, 4B, 4X, with ``S`` appended when a significant
finding unrelated to lung cancer is present), the management and the follow-up interval. The exam
takes the category of its most suspicious finding: :func:`category_rank`.

Order of the rules (first match wins, then the 4X and S modifiers):

1. category 0 flags (exam incomplete)        5. atypical cyst rules
2. proven benign after work-up -> 2          6. juxtapleural/perifissural benign morphology -> 2
3. exam without nodules -> 1                 7. stepped management (stable at 3 / 6 months)
4. benign calcification or fat -> 1          8. size bands by consistency and status
   airway nodule rules                          (baseline / new / growing)

Sizes are mean diameters as measured (to 0.1 mm), never rounded before the comparison with a
threshold (5.95 mm is < 6 mm; Fleischner would round it to 6); where Lung-RADS gives a
volume alternative the diameter is used when given and the volume otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .common import (
    LUNGRADS_SOURCE,
    GuidelineInputError,
    Rationale,
    SizeThreshold,
    Trace,
    round_half_up,
    sphere_diameter_mm,
    to_decimal,
)
from .finding import FIELD_ORDER, Finding

CATEGORY_RANK = {"1": 1, "2": 2, "3": 3, "4A": 4, "4B": 5, "4X": 6, "0": 7}
# Volume alternative of each diameter threshold (CLINICAL.md table; spheres rounded as Lung-RADS does).
VOLUME_AT_MM: dict[int, float] = {4: 34.0, 6: 113.0, 8: 268.0, 10: 524.0, 15: 1767.0, 30: 14137.0}
GROWTH_MM = Decimal("1.5")  # growth = mean diameter increase > 1.5 mm ...
GROWTH_WINDOW_DAYS = 366  # ... within 12 months (a calendar year, leap years included)
BENIGN_CALCIFICATIONS = ("complete", "central", "popcorn", "concentric")
JUXTAPLEURAL_LOCATIONS = ("juxtapleural", "perifissural")
JUXTAPLEURAL_SHAPES = ("oval", "lentiform", "triangular")

# --- conventions (CLINICAL.md: documented next to the rule, shown in the rationale) --------------
CONV_VOLUME_ALTERNATIVE = (
    "Where Lung-RADS gives a volume alternative, the mean diameter is used when given and the volume "
    "otherwise (4/6/8/10/15/30 mm = 34/113/268/524/1,767/14,137 mm³)"
)
CONV_BASELINE_BANDS = (
    "A nodule seen before that does not meet the growth definition (including one crossing a size "
    "threshold) is scored on the baseline bands"
)
CONV_GROWTH_WINDOW = (
    "Growth = mean diameter increase > 1.5 mm within 12 months; 12 months = up to 366 days between "
    "the exams"
)
CONV_GROWTH_BY_VOLUME = (
    "Without diameters at both time points, growth is the change of the volume-equivalent sphere diameter"
)
CONV_PART_SOLID_GROWTH = (
    "For a part-solid nodule, growth is judged on the solid component when it is given at both time "
    "points (a solid component appearing counts as new), otherwise on the total diameter"
)
CONV_NEW_PART_SOLID = "A new part-solid nodule < 6 mm total with solid part < 4 mm is category 3 (CLINICAL.md)"
CONV_GGN_30_GROWING = (
    "A ground-glass nodule >= 30 mm that meets the growth definition is category 3 (v2022 lists >= 30 mm "
    "only as baseline/new: 3, and stable/slowly growing: 2)"
)
CONV_SUBSEGMENTAL_GROWING = (
    "A growing subsegmental airway nodule is category 3 (v2022 lists subsegmental airway nodules only at "
    "baseline, new or stable; NoduleTrack errs towards the shorter interval)"
)
CONV_AIRWAY_FOLLOWUP = (
    "A segmental or more proximal airway nodule already present on the prior exam (stable or growing at "
    "follow-up) is category 4B"
)
CONV_STEP_4A_AT_6 = "A category 4A finding stable at 6 months (rather than 3) is also stepped down to category 3"
CONV_STEP_3_AT_3 = "A category 3 finding stable at 3 months stays category 3 until it has been stable for 6 months"
CONV_SPICULATION = "Spiculated margins count as an additional feature raising suspicion (category 3 or 4 -> 4X)"
CONV_GGN_DOUBLING = (
    "A ground-glass nodule whose volume at least doubled within 12 months counts as an additional "
    "feature raising suspicion (category 3 or 4 -> 4X)"
)
CONV_CYST_LOCULATION = "A thick-walled cyst with increased loculation has become multilocular: category 4A"
CONV_CYST_OPACITY = (
    "change new_or_increased_opacity (an extension of the contract's values) is category 4B for thick-walled "
    "and multilocular cysts alike"
)
CONV_EXAM_FLAGS = "Category 0 flags describe the whole exam and take precedence over the finding's own category"
CONV_PROVEN_BENIGN = "workup proven_benign gives category 2 whatever the prior category (v2022: 4B proven benign)"
CONV_FAST_VDT = (
    "A measured volume doubling time < 400 days with significant volume growth (> 25 %) escalates a "
    "finding: category 3, 4A or 4B -> 4X (fast growth is an additional feature raising suspicion); "
    "category 2 -> 4A; categories 0 and 1, proven-benign lesions, airway nodules and cysts are unchanged"
)

_ANNUAL = ("Continue annual screening with LDCT in 12 months.", 12, 12)
_WORKUP = (
    "Diagnostic chest CT with or without contrast, tissue sampling and/or referral for further clinical "
    "evaluation; no fixed follow-up interval.",
    None,
    None,
)
_MANAGEMENT: dict[str, tuple[str, int | None, int | None]] = {
    "1": _ANNUAL,
    "2": _ANNUAL,
    "3": ("LDCT in 6 months.", 6, 6),
    "4A": ("LDCT in 3 months.", 3, 3),
    "4B": _WORKUP,
    "4X": _WORKUP,
}
_PET = "PET/CT may be considered (solid nodule or solid component >= 8 mm / 268 mm³)."
S_MANAGEMENT = "S: manage the significant finding unrelated to lung cancer as appropriate."

# Size bands: (upper bound in mm, exclusive, or None; category; description).
_SOLID_BASELINE = (
    (6, "2", "solid < 6 mm (< 113 mm³) at baseline"),
    (8, "3", "solid 6 to < 8 mm (113 to < 268 mm³) at baseline"),
    (15, "4A", "solid 8 to < 15 mm (268 to < 1,767 mm³) at baseline"),
    (None, "4B", "solid >= 15 mm (>= 1,767 mm³) at baseline"),
)
_SOLID_NEW = (
    (4, "2", "new solid < 4 mm (< 34 mm³)"),
    (6, "3", "new solid 4 to < 6 mm (34 to < 113 mm³)"),
    (8, "4A", "new solid 6 to < 8 mm (113 to < 268 mm³)"),
    (None, "4B", "new solid >= 8 mm (>= 268 mm³)"),
)
_SOLID_GROWING = (
    (8, "4A", "growing solid < 8 mm (< 268 mm³)"),
    (None, "4B", "growing solid >= 8 mm (>= 268 mm³)"),
)


@dataclass(frozen=True)
class LungRadsResult:
    """Lung-RADS v2022 category of one finding (fields of the JSON contract plus extras)."""

    category: str  # "0".."4X", with "S" appended when applicable
    management: str
    followup_months_min: int | None  # None for 4B/4X and for exams needing comparison first
    followup_months_max: int | None
    growth: bool | None  # growth definition met; None when there was nothing to compare with
    growth_mm: Decimal | None  # mean-diameter change used for growth (solid part for part-solid)
    status: str  # baseline | new | growing | not_growing | not_assessed | exam
    rationale: Rationale
    # False for findings whose category fast growth must not change: exams, benign features,
    # proven-benign lesions, airway nodules and cysts (their own rules already use change).
    escalable: bool = True

    def __post_init__(self) -> None:
        if self.category.removesuffix("S") not in CATEGORY_RANK:
            raise ValueError(f"unknown Lung-RADS category {self.category!r}")

    @property
    def base_category(self) -> str:
        """The category without the S modifier."""
        return self.category.removesuffix("S")

    @property
    def rank(self) -> int:
        return category_rank(self.category)

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "management": self.management,
            "followup_months_min": self.followup_months_min,
            "followup_months_max": self.followup_months_max,
            "growth": self.growth,
            "growth_mm": None if self.growth_mm is None else float(round_half_up(self.growth_mm, 1)),
            "status": self.status,
            "rationale": self.rationale.text(),
        }


def management_for(category: str) -> tuple[str, int | None, int | None]:
    """Management text and follow-up months of a category 1-4X (``S`` adds its sentence).

    Category 0 depends on why the exam is incomplete; :func:`assess` words it.
    """
    base = category.removesuffix("S")
    if base not in _MANAGEMENT:
        raise ValueError(f"no fixed management for category {category!r}")
    text, months_min, months_max = _MANAGEMENT[base]
    if category.endswith("S"):
        text += " " + S_MANAGEMENT
    return text, months_min, months_max


def category_rank(category: str) -> int:
    """Suspicion order for picking the exam category: 1 < 2 < 3 < 4A < 4B < 4X < 0.

    Category 0 ranks highest because an incomplete exam must be completed before any nodule's
    category can be final.
    """
    return CATEGORY_RANK[category.removesuffix("S")]


@dataclass(frozen=True)
class _Size:
    """A size as Lung-RADS compares it: the mean diameter as measured when given, else the volume."""

    diameter_mm: Decimal | None
    volume_mm3: float | None

    def at_least(self, mm: int) -> bool:
        if self.diameter_mm is not None:
            return self.diameter_mm >= mm
        assert self.volume_mm3 is not None
        return self.volume_mm3 >= VOLUME_AT_MM[mm]

    def __str__(self) -> str:
        if self.diameter_mm is not None:
            return f"{self.diameter_mm} mm"
        return f"{self.volume_mm3:g} mm³"


@dataclass(frozen=True)
class _Growth:
    assessed: bool = False
    met: bool = False
    delta_mm: Decimal | None = None


def assess(finding: Finding) -> LungRadsResult:
    """Score one finding with Lung-RADS v2022; raises :class:`GuidelineInputError` for missing inputs."""
    trace = Trace(LUNGRADS_SOURCE, order=FIELD_ORDER)
    growth = _growth(finding, trace)
    status = _status(finding, growth)
    category, rule = _categorize(finding, growth, status, trace)

    if category in ("3", "4A", "4B"):
        features = _suspicious_features(finding, trace)
        if features:
            rule += f"; additional features raising suspicion ({', '.join(features)}) -> 4X"
            category = "4X"
    management, months_min, months_max = _management(finding, category, trace)
    if finding.significant_other_finding:
        trace.use("significant_other_finding", True)
        category += "S"
        management += " " + S_MANAGEMENT
    return LungRadsResult(
        category=category, management=management, followup_months_min=months_min,
        followup_months_max=months_max, growth=growth.met if growth.assessed else None,
        growth_mm=growth.delta_mm, status=status,
        rationale=trace.rationale(f"Lung-RADS v2022 category {category}: {rule}"),
        escalable=finding.finding_type in (None, "nodule") and finding.workup is None,
    )


def escalate_for_fast_growth(result: LungRadsResult, vdt_days: float) -> LungRadsResult:
    """Apply :data:`CONV_FAST_VDT` (caller has checked VDT < 400 d with significant growth)."""
    target = {"2": "4A", "3": "4X", "4A": "4X", "4B": "4X"}.get(result.base_category)
    if target is None or not result.escalable:
        return result
    suffix = "S" if result.category.endswith("S") else ""
    management, months_min, months_max = management_for(target + suffix)
    r = result.rationale
    rationale = dataclasses.replace(
        r,
        rule=f"Lung-RADS v2022 category {target}{suffix}: escalated from {result.category} for fast growth",
        notes=r.notes + (f"Before escalation: {r.rule}",
                         f"Measured volume doubling time {float(round_half_up(vdt_days, 1)):g} days"),
        conventions=r.conventions + (CONV_FAST_VDT,),
    )
    return dataclasses.replace(
        result, category=target + suffix, management=management, followup_months_min=months_min,
        followup_months_max=months_max, rationale=rationale,
    )


def size_thresholds(consistency: str) -> tuple[SizeThreshold, ...]:
    """Total-size thresholds that can change the category, increasing (for forecast statements)."""
    mms = {"solid": (4, 6, 8, 15), "part_solid": (6,), "ground_glass": (30,)}[consistency]
    return tuple(
        SizeThreshold(
            f"Lung-RADS {mm} mm ({VOLUME_AT_MM[mm]:,.0f} mm³)",
            lambda d, mm=mm: d >= mm,
            lambda v, mm=mm: v >= VOLUME_AT_MM[mm],
        )
        for mm in mms
    )


# --- growth and status ------------------------------------------------------------------------


def _diameter(value: float) -> Decimal:
    """A diameter as Lung-RADS compares it: exactly as measured, not rounded (CLINICAL.md)."""
    return to_decimal(value)


def _growth(f: Finding, trace: Trace) -> _Growth:
    """Compare with the prior: growth = mean diameter increase > 1.5 mm within 12 months."""
    if f.new or not f.has_prior_measurement:
        return _Growth()
    if f.consistency == "part_solid" and f.solid_component_mm is not None and f.prior_solid_component_mm is not None:
        trace.convention(CONV_PART_SOLID_GROWTH)
        trace.use("solid_component_mm", f.solid_component_mm)
        trace.use("prior_solid_component_mm", f.prior_solid_component_mm)
        current, prior, basis = _diameter(f.solid_component_mm), _diameter(f.prior_solid_component_mm), "solid component"
        if prior == 0 and current > 0:
            trace.note(f"A solid component of {current} mm has appeared (new solid component)")
            return _Growth(assessed=True, met=True, delta_mm=current)
    elif f.mean_diameter_mm is not None and f.prior_mean_diameter_mm is not None:
        if f.consistency == "part_solid":
            trace.convention(CONV_PART_SOLID_GROWTH)
        trace.use("prior_mean_diameter_mm", f.prior_mean_diameter_mm)
        current, prior, basis = _diameter(f.mean_diameter_mm), _diameter(f.prior_mean_diameter_mm), "mean diameter"
    elif f.volume_mm3 is not None and f.prior_volume_mm3 is not None:
        trace.convention(CONV_GROWTH_BY_VOLUME)
        trace.use("volume_mm3", f.volume_mm3)
        trace.use("prior_volume_mm3", f.prior_volume_mm3)
        current = _diameter(sphere_diameter_mm(f.volume_mm3))
        prior = _diameter(sphere_diameter_mm(f.prior_volume_mm3))
        basis = "volume-equivalent diameter"
    else:
        trace.note("Growth not assessed: the prior and current measurements are not of the same kind")
        return _Growth()
    if f.interval_days is None:
        raise GuidelineInputError(
            "interval_days is required with prior measurements (Lung-RADS growth is defined within 12 months)"
        )
    trace.use("interval_days", f.interval_days)
    trace.convention(CONV_GROWTH_WINDOW)
    delta = current - prior
    within = f.interval_days <= GROWTH_WINDOW_DAYS
    met = delta > GROWTH_MM and within
    verdict = "meets" if met else "does not meet"
    trace.note(f"{basis.capitalize()} changed by {'+' if delta >= 0 else ''}{_mm(delta)} mm "
               f"({_mm(prior)} -> {_mm(current)} mm) in "
               f"{f.interval_days:g} days: {verdict} the growth definition")
    if delta > GROWTH_MM and not within:
        trace.note("The increase took longer than 12 months (slow growth)")
    return _Growth(assessed=True, met=met, delta_mm=delta)


def _mm(value: Decimal) -> str:
    """A millimetre value for display: 0.1 mm, or 0.01 mm when the input had that precision."""
    tenth, hundredth = round_half_up(value, 1), round_half_up(value, 2)
    return str(tenth if tenth == hundredth else hundredth)


def _status(f: Finding, growth: _Growth) -> str:
    if f.finding_type == "exam":
        return "exam"
    if f.new:
        return "new"
    if growth.met:
        return "growing"
    if growth.assessed:
        return "not_growing"
    return "baseline" if f.baseline else "not_assessed"


# --- the rules --------------------------------------------------------------------------------


def _categorize(f: Finding, growth: _Growth, status: str, trace: Trace) -> tuple[str, str]:
    flags = _exam_flags(f, trace)
    if flags:
        if f.finding_type not in (None, "exam") or f.has_size:
            trace.convention(CONV_EXAM_FLAGS)
        return "0", "; ".join(flags)
    if f.workup == "proven_benign":
        trace.use("workup", f.workup)
        trace.use("prior_category", f.prior_category)
        trace.convention(CONV_PROVEN_BENIGN)
        return "2", "lesion proven benign after diagnostic work-up"
    if f.finding_type == "exam":
        if f.has_size or f.consistency is not None:
            raise GuidelineInputError(
                "finding_type exam describes an exam without nodules; give each nodule as its own finding"
            )
        trace.use("finding_type", "exam")
        return "1", "no lung nodules"
    if f.calcification in BENIGN_CALCIFICATIONS or f.contains_fat:
        trace.use("calcification", f.calcification)
        trace.use("contains_fat", f.contains_fat)
        what = f"{f.calcification} calcification" if f.calcification in BENIGN_CALCIFICATIONS else "fat"
        return "1", f"nodule with benign features ({what})"
    if f.calcification is not None:
        trace.use("calcification", f.calcification)
        trace.note(f"Calcification '{f.calcification}' is not a benign pattern (complete, central, popcorn, concentric)")
    if f.finding_type == "airway_nodule":
        return _airway(f, growth, trace)
    if f.finding_type == "atypical_cyst":
        return _cyst(f, growth, trace)

    if f.consistency is None:
        raise GuidelineInputError("consistency is required for a Lung-RADS nodule")
    trace.use("consistency", f.consistency)
    total = _total_size(f, trace)
    trace.use("baseline", f.baseline)
    trace.use("new", f.new)
    juxtapleural = _juxtapleural(f, total, growth, trace)
    if juxtapleural:
        return "2", juxtapleural
    stepped = _stepped(f, growth, trace)
    if stepped:
        return stepped
    if status in ("not_growing", "not_assessed"):
        trace.convention(CONV_BASELINE_BANDS)
    if f.consistency == "solid":
        bands = {"new": _SOLID_NEW, "growing": _SOLID_GROWING}.get(status, _SOLID_BASELINE)
        return _band(total, bands)
    if f.consistency == "part_solid":
        return _part_solid(f, total, status, trace)
    return _ground_glass(total, status, trace)


def _exam_flags(f: Finding, trace: Trace) -> list[str]:
    flags = []
    for name, text in (
        ("prior_ct_being_located", "prior chest CT being located for comparison"),
        ("lungs_not_fully_evaluable", "part or all of the lungs cannot be evaluated"),
        ("infectious_or_inflammatory_findings", "findings suggestive of an inflammatory or infectious process"),
    ):
        if getattr(f, name):
            trace.use(name, True)
            flags.append(text)
    return flags


def _total_size(f: Finding, trace: Trace) -> _Size:
    if f.mean_diameter_mm is not None:
        trace.use("mean_diameter_mm", f.mean_diameter_mm)
        return _Size(_diameter(f.mean_diameter_mm), None)
    if f.volume_mm3 is not None:
        trace.use("volume_mm3", f.volume_mm3)
        trace.convention(CONV_VOLUME_ALTERNATIVE)
        return _Size(None, float(f.volume_mm3))
    raise GuidelineInputError("mean_diameter_mm or volume_mm3 is required for a Lung-RADS nodule")


def _solid_component(f: Finding, trace: Trace) -> _Size:
    if f.solid_component_mm is None:
        raise GuidelineInputError("solid_component_mm is required for this part-solid nodule")
    trace.use("solid_component_mm", f.solid_component_mm)
    return _Size(_diameter(f.solid_component_mm), None)


def _band(size: _Size, bands: tuple[tuple[int | None, str, str], ...]) -> tuple[str, str]:
    for upper, category, text in bands:
        if upper is None or not size.at_least(upper):
            return category, f"{text}, here {size}"
    raise AssertionError("the last band is open-ended")


def _part_solid(f: Finding, total: _Size, status: str, trace: Trace) -> tuple[str, str]:
    if status == "new":
        solid = _solid_component(f, trace)
        if solid.at_least(4):
            return "4B", f"new part-solid nodule with solid component >= 4 mm, here {solid}"
        if not total.at_least(6):
            trace.convention(CONV_NEW_PART_SOLID)
            return "3", f"new part-solid nodule < 6 mm total ({total}) with solid component < 4 mm ({solid})"
        return "4A", f"new part-solid nodule >= 6 mm total ({total}) with solid component < 4 mm ({solid})"
    if status == "growing":
        solid = _solid_component(f, trace)
        if solid.at_least(4):
            return "4B", f"part-solid nodule with growing solid component >= 4 mm, here {solid}"
        return "4A", f"part-solid nodule with growing solid component < 4 mm, here {solid}"
    if not total.at_least(6):
        return "2", f"part-solid nodule < 6 mm total (< 113 mm³) at baseline, here {total}"
    solid = _solid_component(f, trace)
    if not solid.at_least(6):
        return "3", f"part-solid nodule >= 6 mm total ({total}) with solid component < 6 mm ({solid}) at baseline"
    if not solid.at_least(8):
        return "4A", f"part-solid nodule with solid component 6 to < 8 mm at baseline, here {solid}"
    return "4B", f"part-solid nodule with solid component >= 8 mm at baseline, here {solid}"


def _ground_glass(total: _Size, status: str, trace: Trace) -> tuple[str, str]:
    if not total.at_least(30):
        return "2", f"ground-glass nodule < 30 mm (< 14,137 mm³), {status.replace('_', ' ')}, here {total}"
    if status == "not_growing":
        return "2", f"ground-glass nodule >= 30 mm, stable or slowly growing, here {total}"
    if status == "growing":
        trace.convention(CONV_GGN_30_GROWING)
        return "3", f"growing ground-glass nodule >= 30 mm, here {total}"
    return "3", f"ground-glass nodule >= 30 mm (>= 14,137 mm³) at baseline or new, here {total}"


def _juxtapleural(f: Finding, total: _Size, growth: _Growth, trace: Trace) -> str | None:
    """v2022 category 2: solid juxtapleural/perifissural nodule < 10 mm, smooth, oval/lentiform/triangular,
    at baseline or new (a growing one is scored on the solid bands)."""
    if f.consistency != "solid" or f.location not in JUXTAPLEURAL_LOCATIONS:
        return None
    trace.use("location", f.location)
    trace.use("margins", f.margins)
    trace.use("shape", f.shape)
    missing = []
    if f.margins != "smooth":
        missing.append("margins not smooth" if f.margins else "margins not given")
    if f.shape not in JUXTAPLEURAL_SHAPES:
        missing.append(f"shape {f.shape!r} not oval/lentiform/triangular" if f.shape else "shape not given")
    if total.at_least(10):
        missing.append("size >= 10 mm (524 mm³)")
    if growth.met:
        missing.append("growing")
    if missing:
        trace.note(f"Juxtapleural benign-morphology rule not applied: {', '.join(missing)}")
        return None
    return f"{f.location} solid nodule < 10 mm (< 524 mm³) with smooth margins and {f.shape} shape, here {total}"


def _stepped(f: Finding, growth: _Growth, trace: Trace) -> tuple[str, str] | None:
    """Stepped management: 4A stable at 3 months -> 3; 3 stable at 6 months -> 2."""
    if f.status_vs_prior is None:
        return None
    _check_stable(f, growth)
    prior = (f.prior_category or "").removesuffix("S")
    trace.use("prior_category", f.prior_category)
    trace.use("status_vs_prior", f.status_vs_prior)
    at = "3" if f.status_vs_prior == "stable_at_3_month" else "6"
    if prior == "4A":
        if at == "6":
            trace.convention(CONV_STEP_4A_AT_6)
        return "3", f"category 4A finding stable or smaller at {at}-month follow-up"
    if prior == "3":
        if at == "6":
            return "2", "category 3 finding stable or smaller at 6-month follow-up"
        trace.convention(CONV_STEP_3_AT_3)
        return "3", "category 3 finding stable at 3 months (not yet 6 months of stability)"
    trace.note(f"No stepped-management rule for prior category {f.prior_category}; scored on the current findings")
    return None


def _check_stable(f: Finding, growth: _Growth) -> None:
    if growth.met:
        raise GuidelineInputError(
            f"status_vs_prior is {f.status_vs_prior} but the measurements show growth ({growth.delta_mm:+} mm)"
        )
    if f.change is not None:  # every listed change is a change, not stability
        raise GuidelineInputError(f"status_vs_prior is {f.status_vs_prior} but change is {f.change}")


def _airway(f: Finding, growth: _Growth, trace: Trace) -> tuple[str, str]:
    if f.airway_level is None:
        raise GuidelineInputError("airway_level is required for an airway nodule")
    trace.use("finding_type", "airway_nodule")
    trace.use("airway_level", f.airway_level)
    trace.use("mean_diameter_mm", f.mean_diameter_mm)
    trace.use("status_vs_prior", f.status_vs_prior)
    trace.use("prior_category", f.prior_category)
    if f.airway_level == "subsegmental":
        if growth.met:
            trace.convention(CONV_SUBSEGMENTAL_GROWING)
            return "3", "growing subsegmental airway nodule"
        return "2", "subsegmental airway nodule at baseline, new or stable"
    seen_before = not f.new and (f.status_vs_prior is not None or growth.assessed)
    if seen_before:
        trace.convention(CONV_AIRWAY_FOLLOWUP)
        how = "growing" if growth.met else "stable"
        return "4B", f"segmental or more proximal airway nodule {how} at follow-up"
    return "4A", "segmental or more proximal airway nodule at baseline or new"


def _cyst(f: Finding, growth: _Growth, trace: Trace) -> tuple[str, str]:
    if f.cyst_type is None:
        raise GuidelineInputError("cyst_type is required for an atypical cyst (thick_walled or multilocular)")
    trace.use("finding_type", "atypical_cyst")
    trace.use("cyst_type", f.cyst_type)
    trace.use("change", f.change)
    growing = f.change == "growing_cystic_component" or growth.met
    if f.change == "new_or_increased_opacity":
        trace.convention(CONV_CYST_OPACITY)
        return "4B", f"{f.cyst_type.replace('_', '-')} cyst with new or increased opacity"
    if f.cyst_type == "thick_walled":
        if f.change == "growing_wall_thickness_or_nodularity":
            return "4B", "thick-walled cyst with growing wall thickness or nodularity"
        if f.change == "increased_loculation":
            trace.convention(CONV_CYST_LOCULATION)
            return "4A", "thick-walled cyst that has become multilocular"
        if growing:
            return "3", "thick-walled cyst with growing cystic component"
    else:
        if f.change in ("increased_loculation", "growing_wall_thickness_or_nodularity"):
            return "4B", f"multilocular cyst with {f.change.replace('_', ' ')}"
        if growing:
            return "4B", "growing multilocular cyst"
    stepped = _stepped(f, growth, trace)
    if stepped:
        return stepped
    if f.cyst_type == "thick_walled":
        return "4A", "thick-walled cyst"
    return "4A", "multilocular cyst at baseline, or a cyst that has become multilocular"


def _suspicious_features(f: Finding, trace: Trace) -> list[str]:
    """Additional features that turn category 3 or 4 into 4X."""
    features = list(f.additional_suspicious_features)
    if features:
        trace.use("additional_suspicious_features", features)
    if f.margins == "spiculated":
        trace.use("margins", f.margins)
        trace.convention(CONV_SPICULATION)
        features.append("spiculated margins")
    if (
        f.consistency == "ground_glass"
        and f.volume_mm3 is not None
        and f.prior_volume_mm3 is not None
        and f.interval_days is not None
        and f.interval_days <= GROWTH_WINDOW_DAYS
        and f.volume_mm3 >= 2 * f.prior_volume_mm3
    ):
        trace.use("volume_mm3", f.volume_mm3)
        trace.use("prior_volume_mm3", f.prior_volume_mm3)
        trace.convention(CONV_GGN_DOUBLING)
        features.append("ground-glass nodule doubled in volume within 12 months")
    return features


def _management(f: Finding, category: str, trace: Trace) -> tuple[str, int | None, int | None]:
    if category == "0":
        parts, months = [], (None, None)
        if f.prior_ct_being_located:
            parts.append("Compare with the prior chest CT being located, then re-assess.")
        if f.lungs_not_fully_evaluable:
            parts.append("Additional lung cancer screening CT imaging is needed.")
        if f.infectious_or_inflammatory_findings:
            parts.append("LDCT in 1-3 months (possible infection or inflammation).")
            months = (1, 3)
        return " ".join(parts), months[0], months[1]
    text, months_min, months_max = _MANAGEMENT[category]
    if category in ("4A", "4B", "4X") and _has_8mm_solid(f):
        text = f"{text} {_PET}"
    return text, months_min, months_max


def _has_8mm_solid(f: Finding) -> bool:
    if f.consistency == "solid":
        if f.mean_diameter_mm is not None:
            return _diameter(f.mean_diameter_mm) >= 8
        return f.volume_mm3 is not None and f.volume_mm3 >= VOLUME_AT_MM[8]
    if f.consistency == "part_solid" and f.solid_component_mm is not None:
        return _diameter(f.solid_component_mm) >= 8
    return False
