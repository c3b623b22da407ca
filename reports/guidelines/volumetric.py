"""Volumetric rules (NELSON / BTS / EUPS): volume doubling time, volume change, growth bands.

VDT = interval_days * ln 2 / ln(V2 / V1). It is only a doubling time when the nodule grew: equal
volumes give band ``no_growth`` and a shrinking nodule ``decreasing``, both without a VDT (no
negative "doubling time" is ever shown). Numbers are reported to 0.1 (days, %), rounded half-up,
and the band is read from the reported VDT so that report and band always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .common import VOLUMETRIC_SOURCE, GuidelineInputError, Rationale, Trace, round_half_up, to_decimal
from .finding import FIELD_ORDER, Finding

SIGNIFICANT_CHANGE_PCT = Decimal(25)
FAST_VDT_DAYS = Decimal(400)
SLOW_VDT_DAYS = Decimal(600)
VDT_BANDS = ("<400", "400-600", ">600", "no_growth", "decreasing")
_BAND_MEANING = {
    "<400": "fast growth: recall / work-up",
    "400-600": "indeterminate growth: short-interval follow-up",
    ">600": "slow growth",
    "no_growth": "no growth (equal volumes): no doubling time",
    "decreasing": "decreasing volume: no doubling time",
}

# --- conventions (CLINICAL.md) ------------------------------------------------------------------
CONV_SIGNIFICANT = (
    "Significant growth = volume change > 25 % (BTS counts > 25 %; NELSON computed VDT only for >= 25 %)"
)
CONV_BAND_EDGES = (
    "Exactly 400 days is in the 400-600 band (the < 400 band is strict) and exactly 600 days is in 400-600"
)
CONV_REPORTED_PRECISION = "VDT and volume change are reported to 0.1 (half-up); the band is read from the reported VDT"
CONV_EUPS_NEW = "EUPS: a nodule not flagged new is judged by the baseline threshold (> 300 mm³)"
CONV_BTS_VOLUME = "BTS: the volume is used when given (BTS prefers volumetry), the mean diameter otherwise"

# EUPS 2017: refer to the multidisciplinary team above these volumes.
EUPS_BASELINE_MM3 = 300.0
EUPS_NEW_MM3 = 200.0
# BTS 2015: (< 5 mm | < 80 mm³) no follow-up; (5 to < 8 mm | 80 to < 300 mm³) CT at 3 months.
BTS_SMALL = (5.0, 80.0)
BTS_LARGE = (8.0, 300.0)


@dataclass(frozen=True)
class VolumetricResult:
    """Growth of one nodule between two volumes (fields of the JSON contract plus programme advice)."""

    vdt_days: Decimal | None  # 0.1 day; None for no growth, decrease, or no prior
    volume_change_pct: Decimal | None  # 0.1 %
    vdt_band: str | None  # one of VDT_BANDS; None when there is no prior volume
    significant_growth: bool | None
    program: str | None
    program_recommendation: str | None
    rationale: Rationale

    def __post_init__(self) -> None:
        if self.vdt_band is not None and self.vdt_band not in VDT_BANDS:
            raise ValueError(f"vdt_band must be one of {VDT_BANDS}, got {self.vdt_band!r}")

    @property
    def fast_growth(self) -> bool:
        """VDT < 400 days with significant growth: the trigger for escalating a recommendation."""
        return self.vdt_band == "<400" and bool(self.significant_growth)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "vdt_days": None if self.vdt_days is None else float(self.vdt_days),
            "volume_change_pct": None if self.volume_change_pct is None else float(self.volume_change_pct),
            "vdt_band": self.vdt_band,
            "significant_growth": self.significant_growth,
            "rationale": self.rationale.text(),
        }
        if self.program is not None:
            out["program"] = self.program
            out["program_recommendation"] = self.program_recommendation
        return out


def volume_doubling_time_days(prior_volume_mm3: float, volume_mm3: float, interval_days: float) -> float | None:
    """Unrounded VDT in days, or ``None`` when the volume did not increase."""
    if prior_volume_mm3 <= 0 or volume_mm3 <= 0 or interval_days <= 0:
        raise ValueError("volumes and interval must be positive")
    if to_decimal(volume_mm3) <= to_decimal(prior_volume_mm3):
        return None
    return interval_days * math.log(2.0) / math.log(volume_mm3 / prior_volume_mm3)


def volume_change_pct(prior_volume_mm3: float, volume_mm3: float) -> Decimal:
    """Exact 100 (V2 - V1) / V1 (so that 100 -> 125 mm³ is exactly 25 %, not significant)."""
    v1, v2 = to_decimal(prior_volume_mm3), to_decimal(volume_mm3)
    return (v2 - v1) / v1 * 100


def vdt_band(vdt_days: Decimal | None, prior_volume_mm3: float, volume_mm3: float) -> str:
    """Band of a reported VDT; see :data:`CONV_BAND_EDGES` for the edges."""
    if vdt_days is None:
        return "decreasing" if to_decimal(volume_mm3) < to_decimal(prior_volume_mm3) else "no_growth"
    if vdt_days < FAST_VDT_DAYS:
        return "<400"
    return "400-600" if vdt_days <= SLOW_VDT_DAYS else ">600"


def assess(finding: Finding) -> VolumetricResult:
    """VDT, volume change and band (and programme thresholds when ``program`` is given)."""
    trace = Trace(VOLUMETRIC_SOURCE, order=FIELD_ORDER)
    if finding.volume_mm3 is None and finding.program != "BTS":
        raise GuidelineInputError("volume_mm3 is required for the volumetric rules")
    vdt = change = band = significant = None
    if finding.prior_volume_mm3 is not None or finding.program is None:
        for name in ("volume_mm3", "prior_volume_mm3", "interval_days"):
            if getattr(finding, name) is None:
                raise GuidelineInputError(f"{name} is required for a volume doubling time")
        assert finding.volume_mm3 is not None and finding.prior_volume_mm3 is not None
        assert finding.interval_days is not None
        v1, v2, days = finding.prior_volume_mm3, finding.volume_mm3, finding.interval_days
        for name, value in (("prior_volume_mm3", v1), ("volume_mm3", v2), ("interval_days", days)):
            trace.use(name, value)
        raw = volume_doubling_time_days(v1, v2, days)
        vdt = None if raw is None else round_half_up(raw, 1)
        exact_change = volume_change_pct(v1, v2)
        change = round_half_up(exact_change, 1)
        band = vdt_band(vdt, v1, v2)
        significant = exact_change > SIGNIFICANT_CHANGE_PCT
        trace.convention(CONV_SIGNIFICANT)
        trace.convention(CONV_REPORTED_PRECISION)
        if vdt is not None and vdt in (FAST_VDT_DAYS, SLOW_VDT_DAYS):
            trace.convention(CONV_BAND_EDGES)
        shown_vdt = "none" if vdt is None else f"{vdt} days"
        rule = (
            f"VDT = interval x ln2 / ln(V2/V1) = {shown_vdt}, band {band} ({_BAND_MEANING[band]}); "
            f"volume change {change:+} % ({'significant' if significant else 'within measurement error'})"
        )
    else:
        rule = "no prior volume: no doubling time"
    program_text = _program(finding, band, significant, trace) if finding.program else None
    if program_text:
        rule += f"; {program_text}"
    return VolumetricResult(
        vdt_days=vdt, volume_change_pct=change, vdt_band=band, significant_growth=significant,
        program=finding.program, program_recommendation=program_text, rationale=trace.rationale(rule),
    )


def _program(f: Finding, band: str | None, significant: bool | None, trace: Trace) -> str:
    trace.use("program", f.program)
    growth = "" if band is None else f" Growth: VDT band {band} ({_BAND_MEANING[band]})."
    if f.program == "EUPS":
        assert f.volume_mm3 is not None
        trace.use("volume_mm3", f.volume_mm3)
        trace.use("new", f.new)
        if not f.new:
            trace.convention(CONV_EUPS_NEW)
        threshold, kind = (EUPS_NEW_MM3, "new") if f.new else (EUPS_BASELINE_MM3, "baseline")
        if f.volume_mm3 > threshold:
            return f"EUPS 2017: {kind} nodule > {threshold:g} mm³: refer to the multidisciplinary team.{growth}"
        return f"EUPS 2017: {kind} nodule <= {threshold:g} mm³: below the referral threshold.{growth}"
    if f.program == "BTS":
        trace.convention(CONV_BTS_VOLUME)
        if f.volume_mm3 is not None:
            trace.use("volume_mm3", f.volume_mm3)
            size, small, large, unit = f.volume_mm3, BTS_SMALL[1], BTS_LARGE[1], "mm³"
        elif f.mean_diameter_mm is not None:
            trace.use("mean_diameter_mm", f.mean_diameter_mm)
            size, small, large, unit = f.mean_diameter_mm, BTS_SMALL[0], BTS_LARGE[0], "mm"
        else:
            raise GuidelineInputError("volume_mm3 or mean_diameter_mm is required for BTS")
        if size < small:
            advice = f"< {small:g} {unit}: no follow-up"
        elif size < large:
            advice = f"{small:g} to < {large:g} {unit}: CT at 3 months, then decide by volume doubling time"
        else:
            advice = f">= {large:g} {unit}: risk model (Brock), PET/CT, biopsy or surveillance"
        return f"BTS: {advice}.{growth}"
    # NELSON: the doubling time is only meaningful beyond measurement error.
    if significant is None:
        return "NELSON: no prior volume, no doubling time."
    if significant:
        return f"NELSON: volume change > 25 %: VDT applies.{growth}"
    return "NELSON: volume change <= 25 % (within measurement error): VDT not used."
