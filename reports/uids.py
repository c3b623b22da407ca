"""Deterministic UIDs for the objects NoduleTrack writes.

A re-run on the same inputs with the same model must *replace* its earlier output in the PACS, not
add a copy next to it. So the Series and SOP Instance UIDs are not random: they are derived
(``pydicom.uid.generate_uid(entropy_srcs=...)``, a SHA-512 of the sources mapped into a UID) from

    (study instance UID, object kind, digest of the object's content, model version)

Same study + kind + content + model version → the same UIDs; any change in the content (a different
measurement, mask or recommendation) or in the model version → new UIDs, and the writer then
references the instance it supersedes (:class:`Predecessor`).

:func:`content_digest` hashes the values that go into an object (numbers, strings, dates, numpy
arrays, dataclasses, sequences, mappings) in a canonical form, so it does not depend on dict order,
array memory layout or the Python process.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.uid import generate_uid

#: The kinds of object NoduleTrack writes (part of every UID's entropy source).
OBJECT_KINDS = ("seg", "sr", "keyimages")

# Floats are rounded before hashing so that harmless last-bit noise (e.g. from a different BLAS
# summation order) does not make a "new" result; 1e-6 relative is far below any reported precision.
_FLOAT_DIGITS = 6


@dataclass(frozen=True)
class ObjectUIDs:
    """The Series and SOP Instance UIDs for one output object."""

    series_instance_uid: str
    sop_instance_uid: str
    content_digest: str


@dataclass(frozen=True)
class Predecessor:
    """An earlier instance that a new object replaces (a changed result for the same study).

    Only identifiers: the writers reference it (SR: Predecessor Documents Sequence; SEG and key
    images: Referenced Image Sequence with a "replaced instance" purpose) and never read it.
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str

    def __post_init__(self) -> None:
        for name in ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid"):
            _check_uid(getattr(self, name), name)


def _check_uid(value: str, name: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 64 or not all(p.isdigit() for p in value.split(".")):
        raise ValueError(f"{name} must be a DICOM UID (digits and dots, ≤ 64 characters), got {value!r}")


def _canonical(value: Any, h: "hashlib._Hash") -> None:
    """Feed a canonical, type-tagged encoding of ``value`` into ``h``."""
    if value is None:
        h.update(b"N;")
    elif isinstance(value, bool):
        h.update(b"B1;" if value else b"B0;")
    elif isinstance(value, (int, np.integer)):
        h.update(b"I" + str(int(value)).encode() + b";")
    elif isinstance(value, (float, np.floating)):
        f = float(value)
        text = repr(f) if not math.isfinite(f) else f"{f:.{_FLOAT_DIGITS}g}"
        h.update(b"F" + text.encode() + b";")
    elif isinstance(value, enum.Enum):
        h.update(b"E" + type(value).__name__.encode() + b".")
        _canonical(value.value, h)
    elif isinstance(value, decimal.Decimal):  # the guideline engine's exact sizes ("5.5" mm)
        h.update(b"d" + str(value.normalize()).encode() + b";")
    elif isinstance(value, str):
        data = value.encode("utf-8")
        h.update(b"S" + str(len(data)).encode() + b":" + data)
    elif isinstance(value, bytes):
        h.update(b"Y" + str(len(value)).encode() + b":" + value)
    elif isinstance(value, (_dt.date, _dt.datetime)):
        h.update(b"D" + value.isoformat().encode() + b";")
    elif isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.kind == "f":
            arr = np.round(arr.astype(np.float64), _FLOAT_DIGITS)
        elif arr.dtype.kind == "b":
            arr = arr.astype(np.uint8)
        else:
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        h.update(b"A" + arr.dtype.str.encode() + repr(arr.shape).encode() + b":")
        h.update(arr.tobytes())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(b"C" + type(value).__name__.encode() + b"{")
        for f in dataclasses.fields(value):
            h.update(f.name.encode() + b"=")
            _canonical(getattr(value, f.name), h)
        h.update(b"}")
    elif isinstance(value, Mapping):
        h.update(b"M{")
        for key in sorted(value, key=str):
            _canonical(str(key), h)
            _canonical(value[key], h)
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"L[")
        for item in value:
            _canonical(item, h)
        h.update(b"]")
    else:
        raise TypeError(f"content_digest cannot hash a {type(value).__name__}; pass plain values, arrays or dataclasses")


def content_digest(*parts: Any) -> str:
    """Hex SHA-256 of the canonical encoding of ``parts`` (see the module docstring)."""
    h = hashlib.sha256()
    _canonical(list(parts), h)
    return h.hexdigest()


def object_uids(study_instance_uid: str, kind: str, digest: str, model_version: str) -> ObjectUIDs:
    """Series and SOP Instance UIDs for one object, deterministic in all four arguments."""
    _check_uid(study_instance_uid, "study_instance_uid")
    if kind not in OBJECT_KINDS:
        raise ValueError(f"kind must be one of {OBJECT_KINDS}, got {kind!r}")
    if not digest:
        raise ValueError("digest must be a non-empty content digest (reports.uids.content_digest)")
    if not model_version:
        raise ValueError("model_version must be non-empty: it is part of what makes a result the same")
    base = ["noduletrack", study_instance_uid, kind, digest, model_version]
    return ObjectUIDs(
        series_instance_uid=str(generate_uid(entropy_srcs=base + ["series"])),
        sop_instance_uid=str(generate_uid(entropy_srcs=base + ["instance"])),
        content_digest=digest,
    )


def derived_uid(*sources: str) -> str:
    """A deterministic UID from arbitrary strings (e.g. a device UID from the software name)."""
    if not sources:
        raise ValueError("derived_uid needs at least one source string")
    return str(generate_uid(entropy_srcs=["noduletrack", *sources]))
