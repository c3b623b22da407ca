"""Shared pieces of the guideline engine: exact rounding, rationale records, size thresholds.

Why decimals: guideline thresholds sit on round numbers (5.5 mm rounds to 6; growth must exceed
1.5 mm; volume change must exceed 25 %). Binary floats put such values a hair off (``7.3 - 5.3`` is
``1.9999999999999996``) and Python's :func:`round` rounds halves to even (``round(6.5) == 6``).
Every comparison against a guideline threshold therefore goes through :func:`to_decimal`, which
takes the number as it was written (its shortest ``repr``), and :func:`round_half_up`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable

FLEISCHNER_SOURCE = (
    "MacMahon H et al. Guidelines for management of incidental pulmonary nodules detected on CT "
    "images: from the Fleischner Society 2017. Radiology 2017;284:228-243"
)
LUNGRADS_SOURCE = (
    "ACR Lung-RADS v2022 (RadElement set RDES267); Christensen J et al. JACR 2024;21:473-488"
)
VOLUMETRIC_SOURCE = (
    "Horeweg N et al. Eur Respir J 2013 (NELSON, volume doubling time); Nair A et al. Thorax "
    "2018;73:806 (BTS); Oudkerk M et al. Lancet Oncol 2017 (EUPS)"
)

# Guideline identifiers used in the JSON contract, summary.json and the SR.
FLEISCHNER = "fleischner2017"
LUNGRADS = "lungrads2022"
VDT = "vdt"


class GuidelineInputError(ValueError):
    """An input is missing, of the wrong type, out of range or contradictory; the message says which."""


def to_decimal(value: float | int | Decimal) -> Decimal:
    """The exact decimal of ``value`` as written: ``to_decimal(6.8) - to_decimal(5.3) == Decimal("1.5")``."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return Decimal(repr(float(value)))


def round_half_up(value: float | int | Decimal, places: int = 0) -> Decimal:
    """Round to ``places`` decimals with halves going up (5.5 -> 6, 6.5 -> 7), unlike :func:`round`."""
    quantum = Decimal(1).scaleb(-places)
    return to_decimal(value).quantize(quantum, rounding=ROUND_HALF_UP)


def rounded_float(value: float | Decimal | None, places: int = 1) -> float | None:
    """``value`` rounded half-up for output (no binary noise in JSON); ``None`` stays ``None``."""
    return None if value is None else float(round_half_up(value, places))


def sphere_volume_mm3(diameter_mm: float) -> float:
    """V = (pi/6) d^3 (CLINICAL.md): 6 mm -> 113.1 mm^3, 8 mm -> 268.1 mm^3."""
    return math.pi / 6.0 * float(diameter_mm) ** 3


def sphere_diameter_mm(volume_mm3: float) -> float:
    """The diameter of the sphere of ``volume_mm3`` (inverse of :func:`sphere_volume_mm3`)."""
    return (6.0 * float(volume_mm3) / math.pi) ** (1.0 / 3.0)


def format_value(value: object) -> str:
    """How an input is shown in a rationale: JSON-like booleans, numbers to at most 2 decimals.

    Measured values arrive with float noise (29.757704857175977 mm); a report shows 29.76.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(round(value, 2))
    return str(value)


@dataclass(frozen=True)
class Rationale:
    """Why a result is what it is: the rule applied, the inputs that mattered, conventions, source.

    ``text()`` is what the SR and summary.json show; every NoduleTrack convention that shaped the
    result appears in it (CLINICAL.md requires conventions to be visible in the report).
    """

    rule: str
    inputs: tuple[tuple[str, str], ...]
    source: str
    conventions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        parts = [_sentence(self.rule)]
        if self.inputs:
            parts.append("Inputs: " + ", ".join(f"{k}={v}" for k, v in self.inputs) + ".")
        parts += [_sentence(n) for n in self.notes]
        if self.conventions:
            parts.append("Conventions: " + " ".join(_sentence(c) for c in self.conventions))
        parts.append(f"Source: {self.source}.")
        return " ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "inputs": dict(self.inputs),
            "notes": list(self.notes),
            "conventions": list(self.conventions),
            "source": self.source,
            "text": self.text(),
        }


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass
class Trace:
    """Collects, while a rule runs, the inputs it looked at and the conventions it relied on."""

    source: str
    order: tuple[str, ...] = ()  # how inputs are listed (the contract's field order); others last
    inputs: dict[str, str] = field(default_factory=dict)
    conventions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def use(self, name: str, value: object, shown: str | None = None) -> None:
        """Record that input ``name`` mattered (``shown`` overrides how its value is printed).

        The first record of a name wins, so a detailed rendering ("5.5 (rounded to 6 mm)") is kept.
        """
        if value is not None and name not in self.inputs:
            self.inputs[name] = shown if shown is not None else format_value(value)

    def convention(self, text: str) -> None:
        if text not in self.conventions:
            self.conventions.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def rationale(self, rule: str) -> Rationale:
        rank = {name: i for i, name in enumerate(self.order)}
        inputs = sorted(self.inputs.items(), key=lambda kv: rank.get(kv[0], len(rank)))
        return Rationale(
            rule=rule,
            inputs=tuple(inputs),
            source=self.source,
            conventions=tuple(self.conventions),
            notes=tuple(self.notes),
        )


@dataclass(frozen=True)
class SizeThreshold:
    """One size threshold of a guideline, testable on a diameter or on a volume.

    Used to say when a forecast crosses into a higher band ("predicted to reach 8.2 mm by ...").
    """

    label: str
    diameter_met: Callable[[Decimal], bool]
    volume_met: Callable[[float], bool]

    def met(self, diameter_mm: float | None, volume_mm3: float | None) -> bool:
        if diameter_mm is not None:
            return self.diameter_met(to_decimal(diameter_mm))
        if volume_mm3 is not None:
            return self.volume_met(float(volume_mm3))
        return False
