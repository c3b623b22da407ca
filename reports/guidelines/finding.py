"""The input of every guideline rule: one finding, with the field names of the JSON contract.

``Finding`` mirrors the ``input`` object of ``noduletrack guideline`` (CLINICAL.md, "JSON contract")
field for field, so the CLI, the pipeline and the tests all speak the same vocabulary. The
constructor checks ranges, enumerations and contradictions; :meth:`Finding.from_dict` additionally
checks JSON types and rejects unknown keys, because a misspelt key (``mean_diameter`` for
``mean_diameter_mm``) silently ignored would change a clinical recommendation.

Two fields extend the contract because CLINICAL.md's category tables need them and the contract
has no field for them: ``contains_fat`` (fat-containing nodule -> Lung-RADS 1) and
``lungs_not_fully_evaluable`` (Lung-RADS 0). ``change`` also accepts ``new_or_increased_opacity``
(Lung-RADS 4B for a multilocular cyst).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .common import GuidelineInputError

CONSISTENCIES = ("solid", "part_solid", "ground_glass")
MULTIPLICITIES = ("single", "multiple")
RISKS = ("low", "high")
STATUSES_VS_PRIOR = ("stable_at_3_month", "stable_at_6_month")
FINDING_TYPES = ("nodule", "airway_nodule", "atypical_cyst", "exam")
AIRWAY_LEVELS = ("subsegmental", "segmental_or_more_proximal")
CYST_TYPES = ("thick_walled", "multilocular")
CYST_CHANGES = (
    "growing_cystic_component",
    "growing_wall_thickness_or_nodularity",
    "increased_loculation",
    "new_or_increased_opacity",
)
WORKUPS = ("proven_benign",)
PROGRAMS = ("EUPS", "BTS", "NELSON")
LUNGRADS_CATEGORIES = ("0", "1", "2", "3", "4A", "4B", "4X")

# Plausibility limits: a chest is ~350 mm wide; anything beyond is a unit or typing error.
MAX_DIAMETER_MM = 300.0
MAX_VOLUME_MM3 = 1.5e7  # sphere of 300 mm is 1.41e7 mm^3
MAX_AGE_YEARS = 130.0
MAX_INTERVAL_DAYS = 36525.0  # 100 years

_CLOSED_SETS: dict[str, tuple[str, ...]] = {
    "consistency": CONSISTENCIES,
    "multiplicity": MULTIPLICITIES,
    "risk": RISKS,
    "status_vs_prior": STATUSES_VS_PRIOR,
    "finding_type": FINDING_TYPES,
    "airway_level": AIRWAY_LEVELS,
    "cyst_type": CYST_TYPES,
    "change": CYST_CHANGES,
    "workup": WORKUPS,
    "program": PROGRAMS,
}
# (low, high, low_inclusive): value must lie in the range.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "mean_diameter_mm": (0.0, MAX_DIAMETER_MM, False),
    "prior_mean_diameter_mm": (0.0, MAX_DIAMETER_MM, False),
    "solid_component_mm": (0.0, MAX_DIAMETER_MM, True),
    "prior_solid_component_mm": (0.0, MAX_DIAMETER_MM, True),
    "volume_mm3": (0.0, MAX_VOLUME_MM3, False),
    "prior_volume_mm3": (0.0, MAX_VOLUME_MM3, False),
    "age_years": (0.0, MAX_AGE_YEARS, True),
    "interval_days": (0.0, MAX_INTERVAL_DAYS, False),
}


@dataclass(frozen=True)
class Finding:
    """One nodule, airway nodule, atypical cyst or whole exam, as the guideline rules see it.

    Every field is optional; each rule raises :class:`GuidelineInputError` for the fields it needs.
    Sizes are millimetres (mean diameter = (long + short axis) / 2 in one axial plane) and mm^3.
    """

    consistency: str | None = None
    mean_diameter_mm: float | None = None
    solid_component_mm: float | None = None
    volume_mm3: float | None = None
    multiplicity: str | None = None
    risk: str | None = None
    age_years: float | None = None
    known_cancer: bool | None = None
    immunocompromised: bool | None = None
    screening: bool | None = None
    baseline: bool | None = None
    new: bool | None = None
    prior_mean_diameter_mm: float | None = None
    prior_solid_component_mm: float | None = None
    prior_volume_mm3: float | None = None
    interval_days: float | None = None
    prior_category: str | None = None
    status_vs_prior: str | None = None
    finding_type: str | None = None
    location: str | None = None
    shape: str | None = None
    margins: str | None = None
    calcification: str | None = None
    contains_fat: bool | None = None
    airway_level: str | None = None
    cyst_type: str | None = None
    change: str | None = None
    additional_suspicious_features: tuple[str, ...] = ()
    workup: str | None = None
    prior_ct_being_located: bool | None = None
    lungs_not_fully_evaluable: bool | None = None
    infectious_or_inflammatory_findings: bool | None = None
    significant_other_finding: bool | None = None
    program: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in _CLOSED_SETS.items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise GuidelineInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        for name, (low, high, low_inclusive) in _RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise GuidelineInputError(f"{name} must be a finite number; got {value!r}")
            too_low = value < low if low_inclusive else value <= low
            if too_low or value > high:
                bound = f"{'>=' if low_inclusive else '>'} {low:g}"
                raise GuidelineInputError(f"{name} must be {bound} and <= {high:g}; got {value!r}")
        for name, kind in _field_kinds().items():
            value = getattr(self, name)
            if kind == "boolean" and value is not None and not isinstance(value, bool):
                raise GuidelineInputError(f"{name} must be true or false; got {value!r}")
            if kind == "string" and value is not None and not isinstance(value, str):
                raise GuidelineInputError(f"{name} must be a string; got {value!r}")
        if self.prior_category is not None:
            if self.prior_category.removesuffix("S") not in LUNGRADS_CATEGORIES:
                raise GuidelineInputError(
                    f"prior_category must be one of {', '.join(LUNGRADS_CATEGORIES)} (optionally with S); "
                    f"got {self.prior_category!r}"
                )
        for name in ("location", "shape", "margins", "calcification"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise GuidelineInputError(f"{name} must not be empty")
        if isinstance(self.additional_suspicious_features, (str, bytes)) or not isinstance(
            self.additional_suspicious_features, (list, tuple)
        ):
            raise GuidelineInputError("additional_suspicious_features must be a list of non-empty strings")
        object.__setattr__(self, "additional_suspicious_features", tuple(self.additional_suspicious_features))
        for feature in self.additional_suspicious_features:
            if not isinstance(feature, str) or not feature.strip():
                raise GuidelineInputError("additional_suspicious_features must be a list of non-empty strings")
        self._check_consistency_of_sizes()
        self._check_contradictions()

    def _check_consistency_of_sizes(self) -> None:
        # A solid component is part of the nodule: it cannot be larger than the whole.
        pairs = (
            ("solid_component_mm", "mean_diameter_mm"),
            ("prior_solid_component_mm", "prior_mean_diameter_mm"),
        )
        for part, whole in pairs:
            p, w = getattr(self, part), getattr(self, whole)
            if p is not None and w is not None and p > w:
                raise GuidelineInputError(f"{part} ({p!r}) is larger than {whole} ({w!r})")

    def _check_contradictions(self) -> None:
        if self.baseline and self.new:
            raise GuidelineInputError("baseline and new cannot both be true (a new nodule needs a prior exam)")
        if self.new and self.has_prior_measurement:
            raise GuidelineInputError("new is true but prior measurements were given")
        if self.new and self.status_vs_prior is not None:
            raise GuidelineInputError("new is true but status_vs_prior describes a prior nodule")
        if self.status_vs_prior is not None and self.prior_category is None:
            raise GuidelineInputError("status_vs_prior needs prior_category (the category it was stable at)")

    @property
    def has_prior_measurement(self) -> bool:
        return any(
            v is not None
            for v in (self.prior_mean_diameter_mm, self.prior_solid_component_mm, self.prior_volume_mm3)
        )

    @property
    def has_size(self) -> bool:
        return self.mean_diameter_mm is not None or self.volume_mm3 is not None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Finding":
        """Build from a JSON ``input`` object, checking JSON types and rejecting unknown keys."""
        if not isinstance(data, Mapping):
            raise GuidelineInputError(f"input must be a JSON object; got {type(data).__name__}")
        kinds = _field_kinds()
        unknown = sorted(set(data) - set(kinds))
        if unknown:
            raise GuidelineInputError(
                f"unknown input field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            )
        values: dict[str, Any] = {}
        for key, value in data.items():
            if value is None:
                continue  # JSON null = not given
            values[key] = _check_json_type(key, value, kinds[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The given fields only, JSON-ready (the inverse of :meth:`from_dict`)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value == ():
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


# The contract's field order: rationales list the inputs that mattered in this order.
FIELD_ORDER: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Finding))


@functools.cache
def _field_kinds() -> dict[str, str]:
    """JSON kind of every field (number, boolean, string, list), from the annotations."""
    kinds = {}
    for f in dataclasses.fields(Finding):
        annotation = str(f.type)
        if annotation.startswith("float"):
            kinds[f.name] = "number"
        elif annotation.startswith("bool"):
            kinds[f.name] = "boolean"
        elif annotation.startswith("tuple"):
            kinds[f.name] = "list"
        else:
            kinds[f.name] = "string"
    return kinds


def _check_json_type(key: str, value: Any, kind: str) -> Any:
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GuidelineInputError(f"{key} must be a number; got {value!r}")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise GuidelineInputError(f"{key} must be true or false; got {value!r}")
        return value
    if kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise GuidelineInputError(f"{key} must be a list of strings; got {value!r}")
        return tuple(value)
    # Lung-RADS categories 0-3 are often written as numbers; accept them as the string they mean.
    if key == "prior_category" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise GuidelineInputError(f"{key} must be a string; got {value!r}")
    return value
