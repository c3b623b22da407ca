"""Guideline engine: Fleischner 2017, Lung-RADS v2022 and volumetric (VDT) rules, pure and I/O-free.

The rules and their conventions are those of ``../shared/CLINICAL.md``; every result carries a
:class:`~reports.guidelines.common.Rationale` (rule, inputs that mattered, conventions, source).

* :func:`assess` -- one finding with one guideline (the ``noduletrack guideline`` contract).
* :func:`~reports.guidelines.recommend.recommend` -- the study recommendation the pipeline reports.
"""

from __future__ import annotations

from . import fleischner, lungrads, volumetric
from .common import FLEISCHNER, LUNGRADS, VDT, GuidelineInputError, Rationale, round_half_up
from .finding import Finding
from .fleischner import FleischnerResult
from .lungrads import LungRadsResult
from .recommend import ForecastPoint, NoduleInput, StudyContext, StudyRecommendation, recommend
from .volumetric import VolumetricResult

GUIDELINES = (FLEISCHNER, LUNGRADS, VDT)
_ASSESSORS = {FLEISCHNER: fleischner.assess, LUNGRADS: lungrads.assess, VDT: volumetric.assess}


def assess(guideline: str, finding: Finding) -> FleischnerResult | LungRadsResult | VolumetricResult:
    """Apply ``guideline`` (``fleischner2017`` | ``lungrads2022`` | ``vdt``) to ``finding``."""
    try:
        assessor = _ASSESSORS[guideline]
    except KeyError:
        raise GuidelineInputError(
            f"unknown guideline {guideline!r} (expected {', '.join(GUIDELINES)})"
        ) from None
    return assessor(finding)


__all__ = [
    "FLEISCHNER",
    "GUIDELINES",
    "LUNGRADS",
    "VDT",
    "Finding",
    "FleischnerResult",
    "ForecastPoint",
    "GuidelineInputError",
    "LungRadsResult",
    "NoduleInput",
    "Rationale",
    "StudyContext",
    "StudyRecommendation",
    "VolumetricResult",
    "assess",
    "recommend",
    "round_half_up",
]
