"""The study recommendation: one guideline, driven by the most suspicious nodule, growth-aware.

``recommend(nodules, context)`` is what the pipeline calls for summary.json's ``recommendation``
and what the SR writer reports:

* Guideline: ``context.guideline`` when given (per-study override), else Lung-RADS v2022 for a
  screening programme (``[guideline] screening_program`` in the config) and Fleischner 2017
  otherwise.
* Every nodule is assessed; the most suspicious one (highest Lung-RADS category, or most urgent
  Fleischner recommendation; ties: larger nodule) drives the study.
* Measured growth: a volume doubling time < 400 days with significant volume growth (> 25 %)
  escalates that nodule (conventions in ``fleischner.CONV_FAST_VDT`` and ``lungrads.CONV_FAST_VDT``).
  Without both volumes a measured VDT < 400 days is trusted as given.
* Forecast: when the growth model predicts that a nodule crosses a size threshold of the guideline by
  the proposed follow-up date, the text says so ("predicted to reach 8.2 mm by 2027-05-01"). The
  forecast informs; it does not change the category.
* Due date = study date + ``followup_months_min`` calendar months (:data:`CONV_DUE_DATE`).
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from . import fleischner, lungrads, volumetric
from .common import FLEISCHNER, LUNGRADS, GuidelineInputError, SizeThreshold, round_half_up, sphere_diameter_mm
from .finding import CONSISTENCIES, RISKS, Finding
from .fleischner import FleischnerResult
from .lungrads import LungRadsResult
from .volumetric import VolumetricResult

CONV_DUE_DATE = (
    "Due date = study date + the shortest recommended interval in calendar months (the end of a "
    "shorter month is used when the day does not exist)"
)
CONV_FORECAST_HORIZON = (
    "Forecasts are checked up to the proposed follow-up date; without one, every forecast point is checked"
)
FAST_VDT_DAYS = 400.0


@dataclass(frozen=True)
class ForecastPoint:
    """The growth model's prediction for one nodule at one date."""

    date: dt.date
    mean_diameter_mm: float | None = None
    volume_mm3: float | None = None

    def __post_init__(self) -> None:
        if self.mean_diameter_mm is None and self.volume_mm3 is None:
            raise GuidelineInputError("a forecast point needs mean_diameter_mm or volume_mm3")
        for name in ("mean_diameter_mm", "volume_mm3"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise GuidelineInputError(f"forecast {name} must be > 0; got {value!r}")


@dataclass(frozen=True)
class NoduleInput:
    """One nodule of the current study, with its prior values and measured/forecast growth."""

    label: str  # how the text names it, e.g. "Nodule 1" (the SR's tracking identifier)
    consistency: str
    mean_diameter_mm: float | None = None
    solid_component_mm: float | None = None
    volume_mm3: float | None = None
    prior_mean_diameter_mm: float | None = None
    prior_solid_component_mm: float | None = None
    prior_volume_mm3: float | None = None
    interval_days: float | None = None
    new: bool = False
    location: str | None = None
    shape: str | None = None
    margins: str | None = None
    calcification: str | None = None
    vdt_days: float | None = None  # measured; computed from the volumes when not given
    forecast: tuple[ForecastPoint, ...] = ()
    tracking_uid: str | None = None  # the SR's tracking UID, passed through to the result

    def __post_init__(self) -> None:
        if not self.label:
            raise GuidelineInputError("a nodule needs a label")
        if self.consistency not in CONSISTENCIES:
            raise GuidelineInputError(f"consistency must be one of {', '.join(CONSISTENCIES)}; got {self.consistency!r}")
        if self.mean_diameter_mm is None and self.volume_mm3 is None:
            raise GuidelineInputError(f"{self.label}: mean_diameter_mm or volume_mm3 is required")
        if self.vdt_days is not None and not self.vdt_days > 0:
            raise GuidelineInputError(f"{self.label}: vdt_days must be > 0; got {self.vdt_days!r}")
        object.__setattr__(self, "forecast", tuple(sorted(self.forecast, key=lambda p: p.date)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NoduleInput":
        """From a plain dict; ``forecast`` items are ``{"date": "YYYY-MM-DD", "mean_diameter_mm", "volume_mm3"}``."""
        values = dict(data)
        points = []
        for item in values.pop("forecast", None) or ():
            item = dict(item)
            date = item.pop("date")
            points.append(ForecastPoint(date=_as_date(date), **item))
        try:
            return cls(**values, forecast=tuple(points))
        except TypeError as exc:  # unknown or missing keys
            raise GuidelineInputError(f"nodule: {exc}") from None

    @classmethod
    def from_tracked(cls, tracked: Any, study_date: dt.date) -> "NoduleInput":
        """From an ``inference.types.TrackedNodule`` (current measurement required)."""
        cur = tracked.current
        prior = None if tracked.status == "new" else tracked.prior  # a new nodule has no prior by definition
        if tracked.interval_days is None or tracked.interval_days <= 0:
            # a prior dated the same day or later (the analysis notes it and computes no VDT) gives
            # no interval to grow in: the nodule is assessed on its current size alone
            prior = None
        if cur is None:
            raise GuidelineInputError(f"{tracked.tracking_id}: a resolved nodule has no current measurement")
        points: tuple[ForecastPoint, ...] = ()
        if tracked.forecast is not None:
            f = tracked.forecast
            points = (ForecastPoint(study_date + dt.timedelta(days=int(f.horizon_days)), f.mean_diameter_mm, f.volume_mm3),)
        return cls(
            label=tracked.tracking_id,
            consistency=cur.consistency,
            mean_diameter_mm=cur.mean_diameter_mm,
            solid_component_mm=cur.solid_component_mm if cur.consistency == "part_solid" else None,
            volume_mm3=cur.volume_mm3,
            prior_mean_diameter_mm=None if prior is None else prior.mean_diameter_mm,
            prior_solid_component_mm=None if prior is None or cur.consistency != "part_solid" else prior.solid_component_mm,
            prior_volume_mm3=None if prior is None else prior.volume_mm3,
            interval_days=tracked.interval_days if prior is not None else None,
            new=tracked.status == "new",
            location="juxtapleural" if cur.juxtapleural else None,
            margins=cur.margin or None,
            vdt_days=tracked.vdt_days,
            forecast=points,
            tracking_uid=tracked.tracking_uid,
        )


@dataclass(frozen=True)
class StudyContext:
    """What the study adds to the nodules: date, guideline choice, patient risk factors."""

    study_date: dt.date
    screening: bool = False  # config [guideline] screening_program, overridable per study
    guideline: str | None = None  # "fleischner2017" | "lungrads2022": explicit per-study override
    risk: str = "low"
    age_years: float | None = None
    baseline: bool = False  # first screening round (Lung-RADS baseline bands)
    known_cancer: bool = False
    immunocompromised: bool = False
    significant_other_finding: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.study_date, dt.date):
            raise GuidelineInputError(f"study_date must be a date; got {self.study_date!r}")
        if self.guideline not in (None, FLEISCHNER, LUNGRADS):
            raise GuidelineInputError(f"guideline must be {FLEISCHNER} or {LUNGRADS}; got {self.guideline!r}")
        if self.risk not in RISKS:
            raise GuidelineInputError(f"risk must be one of {', '.join(RISKS)}; got {self.risk!r}")

    @classmethod
    def from_settings(cls, settings: Any, study_date: dt.date, **overrides: Any) -> "StudyContext":
        """From the config's ``[guideline]`` section plus per-study values (``None`` = not known).

        ``settings`` needs ``screening_program`` and ``risk`` (``dicom_node.config.GuidelineSection``;
        duck-typed because ``reports`` must not import the service). Its ``default_age_years`` is
        deliberately not used: an unknown age is handled by Fleischner's own assumption (adult
        >= 35 years), which the text states, instead of a made-up age that would read as measured.
        """
        values: dict[str, Any] = {"screening": bool(settings.screening_program), "risk": settings.risk}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(study_date=study_date, **values)

    @property
    def chosen_guideline(self) -> str:
        if self.guideline is not None:
            return self.guideline
        return LUNGRADS if self.screening else FLEISCHNER


@dataclass(frozen=True)
class NoduleRecommendation:
    """One nodule's assessment within the study (the SR reports it next to the nodule)."""

    label: str
    result: FleischnerResult | LungRadsResult
    volumetric: VolumetricResult | None
    vdt_days: float | None  # measured or computed, unrounded
    escalated: bool
    forecast_statement: str | None
    size_mm: float  # for tie-breaks and text: mean diameter, or volume-equivalent diameter
    tracking_uid: str | None = None

    @property
    def guideline(self) -> str:
        return LUNGRADS if isinstance(self.result, LungRadsResult) else FLEISCHNER

    @property
    def category(self) -> str:
        return self.result.category

    @property
    def followup_months_min(self) -> int | None:
        return self.result.followup_months_min

    @property
    def followup_months_max(self) -> int | None:
        return self.result.followup_months_max

    @property
    def text(self) -> str:
        """Recommendation, rationale and forecast statement of this nodule, as one text."""
        r = self.result
        action = r.management if isinstance(r, LungRadsResult) else r.recommendation
        parts = [action, r.rationale.text()]
        if self.forecast_statement:
            parts.append(self.forecast_statement)
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "tracking_uid": self.tracking_uid,
            "result": self.result.to_dict(),
            "volumetric": None if self.volumetric is None else self.volumetric.to_dict(),
            "vdt_days": None if self.vdt_days is None else float(round_half_up(self.vdt_days, 1)),
            "escalated_for_fast_growth": self.escalated,
            "forecast_statement": self.forecast_statement,
        }


@dataclass(frozen=True)
class StudyRecommendation:
    """The study's recommendation: summary.json ``recommendation`` and the SR's content."""

    guideline: str
    category: str
    followup_months_min: int | None
    followup_months_max: int | None
    due_date: dt.date | None
    text: str
    driver: str | None  # label of the nodule that drives the recommendation
    nodules: tuple[NoduleRecommendation, ...] = field(default=())

    def to_dict(self, include_nodules: bool = False) -> dict[str, Any]:
        """The summary.json ``recommendation`` object (plus per-nodule results on request)."""
        out: dict[str, Any] = {
            "guideline": self.guideline,
            "category": self.category,
            "followup_months_min": self.followup_months_min,
            "followup_months_max": self.followup_months_max,
            "due_date": None if self.due_date is None else self.due_date.isoformat(),
            "text": self.text,
        }
        if include_nodules:
            out["driver"] = self.driver
            out["nodules"] = [n.to_dict() for n in self.nodules]
        return out


def recommend(nodules: Sequence[NoduleInput | Mapping[str, Any]], context: StudyContext) -> StudyRecommendation:
    """Assess every nodule with the study's guideline and return the study recommendation."""
    items = [n if isinstance(n, NoduleInput) else NoduleInput.from_dict(n) for n in nodules]
    labels = [n.label for n in items]
    if len(set(labels)) != len(labels):
        raise GuidelineInputError("nodule labels must be unique")
    guideline = context.chosen_guideline
    assessed = [_assess_nodule(n, context, guideline, multiple=len(items) > 1) for n in items]
    if guideline == LUNGRADS:
        return _lungrads_study(assessed, items, context)
    return _fleischner_study(assessed, items, context)


# --- per nodule ---------------------------------------------------------------------------------


def _assess_nodule(n: NoduleInput, ctx: StudyContext, guideline: str, multiple: bool) -> NoduleRecommendation:
    common = dict(
        consistency=n.consistency, mean_diameter_mm=n.mean_diameter_mm,
        solid_component_mm=n.solid_component_mm, volume_mm3=n.volume_mm3,
        prior_mean_diameter_mm=n.prior_mean_diameter_mm, prior_solid_component_mm=n.prior_solid_component_mm,
        prior_volume_mm3=n.prior_volume_mm3, interval_days=n.interval_days,
    )
    try:
        if guideline == LUNGRADS:
            finding = Finding(
                **common, baseline=ctx.baseline and not n.new, new=n.new or None, location=n.location,
                shape=n.shape, margins=n.margins, calcification=n.calcification,
            )
            result: FleischnerResult | LungRadsResult = lungrads.assess(finding)
        else:
            finding = Finding(
                **common, multiplicity="multiple" if multiple else "single", risk=ctx.risk,
                age_years=ctx.age_years, known_cancer=ctx.known_cancer,
                immunocompromised=ctx.immunocompromised, screening=ctx.screening,
            )
            result = fleischner.assess(finding)
    except GuidelineInputError as exc:
        raise GuidelineInputError(f"{n.label}: {exc}") from None

    vol = None
    if n.volume_mm3 is not None and n.prior_volume_mm3 is not None and n.interval_days is not None:
        vol = volumetric.assess(Finding(volume_mm3=n.volume_mm3, prior_volume_mm3=n.prior_volume_mm3,
                                        interval_days=n.interval_days))
    vdt = n.vdt_days
    if vdt is None and vol is not None and vol.vdt_days is not None:
        vdt = float(vol.vdt_days)
    # Fast growth: VDT < 400 d, and beyond measurement error when the volume change is known.
    fast = vdt is not None and vdt < FAST_VDT_DAYS and (vol is None or bool(vol.significant_growth))
    escalated = False
    if fast:
        assert vdt is not None
        before = result.category
        if isinstance(result, LungRadsResult):
            result = lungrads.escalate_for_fast_growth(result, vdt)
        else:
            result = fleischner.escalate_for_fast_growth(result, vdt)
        escalated = result.category != before
    if n.mean_diameter_mm is not None:
        size = n.mean_diameter_mm
    else:
        assert n.volume_mm3 is not None
        size = sphere_diameter_mm(n.volume_mm3)
    return NoduleRecommendation(n.label, result, vol, vdt, escalated, None, float(size), n.tracking_uid)


def _suspicion_key(rec: NoduleRecommendation) -> tuple[Any, ...]:
    """Sort key: most suspicious first (category/urgency, then size, then label for determinism)."""
    return (-rec.result.rank, -rec.size_mm, rec.label)


# --- study level --------------------------------------------------------------------------------


def _lungrads_study(
    assessed: list[NoduleRecommendation], items: list[NoduleInput], ctx: StudyContext
) -> StudyRecommendation:
    suffix = "S" if ctx.significant_other_finding else ""
    if not assessed:
        category = "1" + suffix
        management, months_min, months_max = lungrads.management_for(category)
        due = _add_months(ctx.study_date, months_min) if months_min is not None else None
        text = (
            f"Lung-RADS v2022 category {category}: no lung nodules. {management} "
            f"{_due_text(ctx.study_date, due, months_min)} Source: {lungrads.LUNGRADS_SOURCE}."
        )
        return StudyRecommendation(LUNGRADS, category, months_min, months_max, due, text, None, ())
    ordered = sorted(assessed, key=_suspicion_key)
    driver = ordered[0]
    result = driver.result
    assert isinstance(result, LungRadsResult)
    category = result.base_category + suffix
    management = result.management
    if suffix and not result.category.endswith("S"):
        management += " " + lungrads.S_MANAGEMENT
    due = _add_months(ctx.study_date, result.followup_months_min) if result.followup_months_min is not None else None
    with_forecasts = _with_forecasts(assessed, items, LUNGRADS, due)
    text = _study_text(
        f"Lung-RADS v2022 (screening). Exam category {category}, driven by {driver.label}.",
        driver, with_forecasts, management, ctx.study_date, due, result.followup_months_min,
    )
    return StudyRecommendation(
        LUNGRADS, category, result.followup_months_min, result.followup_months_max, due, text,
        driver.label, tuple(with_forecasts),
    )


def _fleischner_study(
    assessed: list[NoduleRecommendation], items: list[NoduleInput], ctx: StudyContext
) -> StudyRecommendation:
    reasons = fleischner.not_applicable_reasons(
        Finding(age_years=ctx.age_years, screening=ctx.screening, known_cancer=ctx.known_cancer,
                immunocompromised=ctx.immunocompromised)
    )
    if reasons:
        reason = "; ".join(reasons)
        text = (
            f"Fleischner 2017 does not apply: {reason}. No guideline interval is given; manage clinically. "
            f"Source: {fleischner.FLEISCHNER_SOURCE}."
        )
        return StudyRecommendation(FLEISCHNER, "not applicable", None, None, None, text, None, tuple(assessed))
    if not assessed:
        text = (
            "Fleischner 2017: no pulmonary nodule measured; no nodule follow-up is recommended. "
            f"Source: {fleischner.FLEISCHNER_SOURCE}."
        )
        return StudyRecommendation(FLEISCHNER, "no nodules", None, None, None, text, None, ())
    ordered = sorted(assessed, key=_suspicion_key)
    driver = ordered[0]
    result = driver.result
    assert isinstance(result, FleischnerResult)
    due = _add_months(ctx.study_date, result.followup_months_min) if result.followup_months_min is not None else None
    with_forecasts = _with_forecasts(assessed, items, FLEISCHNER, due)
    head = f"Fleischner 2017 (incidental nodules). Recommendation driven by {driver.label}: {result.category}."
    return StudyRecommendation(
        FLEISCHNER, result.category, result.followup_months_min, result.followup_months_max, due,
        _study_text(head, driver, with_forecasts, result.recommendation, ctx.study_date, due,
                    result.followup_months_min),
        driver.label, tuple(with_forecasts),
    )


def _study_text(
    head: str,
    driver: NoduleRecommendation,
    nodules: list[NoduleRecommendation],
    management: str,
    study_date: dt.date,
    due: dt.date | None,
    months_min: int | None,
) -> str:
    parts = [head, f"Recommendation: {management}", _due_text(study_date, due, months_min)]
    parts.append(f"{driver.label}: {driver.result.rationale.text()}")
    others = [n for n in sorted(nodules, key=_suspicion_key) if n.label != driver.label]
    if others:
        parts.append("Other nodules: " + "; ".join(f"{n.label}: {n.category}" for n in others) + ".")
    for n in sorted(nodules, key=_suspicion_key):
        if n.volumetric is not None and n.volumetric.vdt_band is not None:
            v = n.volumetric
            vdt = "none" if v.vdt_days is None else f"{v.vdt_days} days"
            parts.append(f"{n.label} growth: VDT {vdt} ({v.vdt_band}), volume change {v.volume_change_pct:+} %.")
        elif n.vdt_days is not None:
            parts.append(f"{n.label} growth: measured VDT {float(round_half_up(n.vdt_days, 1)):g} days.")
    forecasts = [n.forecast_statement for n in sorted(nodules, key=_suspicion_key) if n.forecast_statement]
    if forecasts:
        parts.append("Forecast: " + " ".join(forecasts) + f" ({CONV_FORECAST_HORIZON}.)")
    return " ".join(p.strip() for p in parts if p)


def _due_text(study_date: dt.date, due: dt.date | None, months_min: int | None) -> str:
    if due is None or months_min is None:
        return "No follow-up CT date is set."
    return (
        f"Follow-up due {due.isoformat()} (study date {study_date.isoformat()} + {months_min} "
        f"month{'s' if months_min != 1 else ''}; {CONV_DUE_DATE})."
    )


# --- forecasts ----------------------------------------------------------------------------------


def _with_forecasts(
    assessed: list[NoduleRecommendation], items: list[NoduleInput], guideline: str, horizon: dt.date | None
) -> list[NoduleRecommendation]:
    by_label = {n.label: n for n in items}
    out = []
    for rec in assessed:
        statement = forecast_statement(by_label[rec.label], guideline, horizon)
        out.append(dataclasses.replace(rec, forecast_statement=statement))
    return out


def forecast_statement(nodule: NoduleInput, guideline: str, horizon: dt.date | None) -> str | None:
    """"<label> is predicted to reach 8.3 mm by 2027-05-01 (crossing the Lung-RADS 8 mm ... threshold)".

    Size basis: the mean diameter when the nodule and the forecast both have one, else the volume.
    The highest threshold crossed by any forecast point up to ``horizon`` (all points when ``None``)
    is reported, with the earliest point that crosses it.
    """
    if guideline == LUNGRADS:
        thresholds: Iterable[SizeThreshold] = lungrads.size_thresholds(nodule.consistency)
    else:
        thresholds = fleischner.size_thresholds(nodule.consistency)
    use_diameter = nodule.mean_diameter_mm is not None
    current = (nodule.mean_diameter_mm, None) if use_diameter else (None, nodule.volume_mm3)
    best: tuple[int, ForecastPoint, SizeThreshold] | None = None
    for point in nodule.forecast:
        if horizon is not None and point.date > horizon:
            break
        predicted = (point.mean_diameter_mm, None) if use_diameter else (None, point.volume_mm3)
        if predicted[0] is None and predicted[1] is None:
            continue
        for index, threshold in enumerate(thresholds):
            if threshold.met(*predicted) and not threshold.met(*current):
                if best is None or index > best[0]:
                    best = (index, point, threshold)
    if best is None:
        return None
    _, point, threshold = best
    if use_diameter:
        assert point.mean_diameter_mm is not None
        size = f"{round_half_up(point.mean_diameter_mm, 1)} mm"
    else:
        assert point.volume_mm3 is not None
        size = f"{round_half_up(point.volume_mm3, 0)} mm³"
    return f"{nodule.label} is predicted to reach {size} by {point.date.isoformat()} (crossing the {threshold.label} threshold)."


# --- dates --------------------------------------------------------------------------------------


def _add_months(date: dt.date, months: int) -> dt.date:
    """Calendar months; 31 Jan + 1 month = 28/29 Feb (see :data:`CONV_DUE_DATE`)."""
    month_index = date.month - 1 + months
    year, month = date.year + month_index // 12, month_index % 12 + 1
    day = min(date.day, calendar.monthrange(year, month)[1])
    return dt.date(year, month, day)


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise GuidelineInputError(f"forecast date must be YYYY-MM-DD; got {value!r}") from None


__all__ = [
    "CONV_DUE_DATE",
    "ForecastPoint",
    "NoduleInput",
    "NoduleRecommendation",
    "StudyContext",
    "StudyRecommendation",
    "forecast_statement",
    "recommend",
]
