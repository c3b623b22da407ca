"""Synthetic chest-CT phantoms with known nodules and growth (``noduletrack phantom``).

There is no public longitudinal lung-CT data on this machine, so the project makes its own: chest
CT studies (body, fat and muscle, ribs, spine, mediastinum and heart, lungs with parenchymal texture
and tapering vessel trees, airways, correlated noise, partial-volume edges) with nodules of
controlled size, consistency, margin and location, followed over several studies with a known
growth law, a small repositioning per study, and full DICOM headers. See :func:`generate_patient`,
:func:`write_patient` and :func:`generate_patch_pairs` (growth-model training pairs).
"""

from .patches import generate_patch_pairs
from .patient import (
    CONSISTENCIES,
    LOCATIONS,
    MARGINS,
    PATTERNS,
    PhantomNoduleTruth,
    PhantomPatient,
    PhantomTimepoint,
    generate_patient,
    write_patient,
)

__all__ = [
    "CONSISTENCIES",
    "LOCATIONS",
    "MARGINS",
    "PATTERNS",
    "PhantomNoduleTruth",
    "PhantomPatient",
    "PhantomTimepoint",
    "generate_patch_pairs",
    "generate_patient",
    "write_patient",
]
