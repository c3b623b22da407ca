"""Choose the one CT series of a study that nodule measurement should use.

A study routed from a PACS typically holds several series: localizers (scouts), thick and thin
reconstructions, soft-tissue and lung kernels, dose reports and other non-image objects. Volumetry
needs a *single, geometrically regular, axial* stack, and it is most accurate on the thinnest
reconstruction (less partial volume). Among equally thin recons a lung (sharp) kernel is preferred,
as radiologists read nodules on it.

Every series that is not used is reported with the reason, so that a study that cannot be analysed
says why (gaps, mixed orientation, duplicate positions, ...), rather than crashing or silently
picking a wrong stack.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

log = logging.getLogger("noduletrack.inference.series")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

# Vendor kernel names that denote a sharp "lung" reconstruction (Siemens B/I/Br 50-80, GE LUNG/BONE,
# Philips L/YC/YD, Canon FC5x/FC8x, generic "LUNG"/"SHARP"). Matched case-insensitively as substrings
# or by prefix + sharpness number.
_LUNG_KERNEL_WORDS = ("LUNG", "SHARP", "BONEPLUS", "BONE", "YC", "YD", "FC5", "FC8", "LUNGE")

# Tolerances: positions are floats written by scanners with ~0.01 mm resolution.
_AXIAL_MIN_COS = 0.9  # |slice normal · LPS z| above this counts as axial (≤ ~25° gantry tilt)
_SAME_ORIENTATION_TOL = 1e-3
_DUPLICATE_TOL_MM = 0.01
_GAP_REL_TOL = 0.2  # a step 20 % off the median step = a gap (or overlap)
_MIN_SLICES = 16


class SeriesSelectionError(ValueError):
    """No series in the input can be analysed; the message lists every series and why it was rejected."""


@dataclass
class SeriesCandidate:
    """One series found in the input, usable or not."""

    series_instance_uid: str
    study_instance_uid: str = ""
    description: str = ""
    kernel: str = ""
    files: list[Path] = field(default_factory=list)  # sorted along the slice normal when usable
    # header-only datasets read while scanning, in the order of ``files`` (lets the loader skip a
    # second parse of every header when it can read the pixel data directly)
    headers: list[Dataset] = field(default_factory=list, repr=False)
    slice_spacing_mm: float | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    rejected: str | None = None  # reason when not usable

    @property
    def usable(self) -> bool:
        return self.rejected is None

    @property
    def lung_kernel(self) -> bool:
        return is_lung_kernel(self.kernel)

    def describe(self) -> str:
        what = f"series {self.series_instance_uid} ({self.description or 'no description'}, {len(self.files)} files"
        if self.slice_spacing_mm:
            what += f", {self.slice_spacing_mm:.2f} mm"
        if self.kernel:
            what += f", kernel {self.kernel}"
        what += ")"
        return what + (f": {self.rejected}" if self.rejected else "")


@dataclass
class SeriesSelection:
    """The chosen series and every other one with the reason it was not chosen."""

    chosen: SeriesCandidate
    others: list[SeriesCandidate]
    ignored_files: list[tuple[Path, str]]  # non-DICOM or non-image files, with the reason

    def summary(self) -> str:
        lines = [f"chosen: {self.chosen.describe()}"]
        lines += [f"not used: {c.describe()}" for c in self.others]
        return "\n".join(lines)


def is_lung_kernel(kernel: str) -> bool:
    """True for reconstruction kernels that are sharp/lung kernels by vendor naming."""
    k = kernel.upper().replace(" ", "")
    if any(w in k for w in _LUNG_KERNEL_WORDS):
        return True
    # Siemens: B60f, B70f, Br64, I70f ... (letter(s) + sharpness ≥ 50)
    for prefix in ("BR", "B", "I", "BL", "HR"):
        if k.startswith(prefix) and k[len(prefix):len(prefix) + 2].isdigit():
            return int(k[len(prefix):len(prefix) + 2]) >= 50
    return k in ("L", "LUNG")


def _iter_files(inputs: Path | str | Iterable[Path | str]) -> list[Path]:
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for root, _dirs, files in os.walk(p):
                out.extend(Path(root) / f for f in sorted(files))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return sorted(out)


def _vec(ds: Dataset, keyword: str, n: int) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None or len(value) != n:
        return None
    try:
        return np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None


def _check_geometry(cand: SeriesCandidate, headers: list[Dataset]) -> None:
    """Sort ``cand.files`` along the slice normal or set ``cand.rejected`` with the reason."""
    orientations = [_vec(h, "ImageOrientationPatient", 6) for h in headers]
    positions = [_vec(h, "ImagePositionPatient", 3) for h in headers]
    if any(o is None for o in orientations) or any(p is None for p in positions):
        cand.rejected = "missing or malformed Image Orientation/Position (Patient)"
        return
    o0 = orientations[0]
    if any(np.max(np.abs(o - o0)) > _SAME_ORIENTATION_TOL for o in orientations):
        cand.rejected = "mixed orientation: slices have different Image Orientation (Patient)"
        return
    row, col = o0[:3], o0[3:]
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 0.5:
        cand.rejected = "degenerate Image Orientation (Patient)"
        return
    normal /= np.linalg.norm(normal)
    if abs(normal[2]) < _AXIAL_MIN_COS:
        cand.rejected = f"not axial (slice normal {np.round(normal, 3).tolist()})"
        return
    spacings = {tuple(np.round(_vec(h, "PixelSpacing", 2) if _vec(h, "PixelSpacing", 2) is not None else (-1, -1), 4)) for h in headers}
    if len(spacings) != 1 or next(iter(spacings))[0] <= 0:
        cand.rejected = "missing or inconsistent Pixel Spacing"
        return
    sizes = {(int(h.get("Rows", 0)), int(h.get("Columns", 0))) for h in headers}
    if len(sizes) != 1:
        cand.rejected = f"inconsistent matrix sizes {sorted(sizes)}"
        return
    if len(headers) < _MIN_SLICES:
        cand.rejected = f"only {len(headers)} slices (need at least {_MIN_SLICES} for a volume)"
        return
    dist = np.asarray([float(p @ normal) for p in positions])
    order = np.argsort(dist, kind="stable")
    dist = dist[order]
    steps = np.diff(dist)
    if np.any(steps < _DUPLICATE_TOL_MM):
        k = int(np.argmax(steps < _DUPLICATE_TOL_MM))
        cand.rejected = f"duplicate slice positions (at {dist[k]:.2f} mm along the normal)"
        return
    median = float(np.median(steps))
    bad = np.abs(steps - median) > _GAP_REL_TOL * median
    if np.any(bad):
        k = int(np.argmax(bad))
        cand.rejected = (
            f"irregular slice spacing: gap of {steps[k]:.2f} mm at {dist[k]:.2f} mm "
            f"(median spacing {median:.2f} mm; missing or overlapping slices)"
        )
        return
    # in-plane offsets must not drift (sheared stack, e.g. gantry tilt not corrected)
    inplane = np.asarray(positions)[order] - np.outer(dist, normal)
    if np.max(np.linalg.norm(inplane - inplane[0], axis=1)) > 0.5 * min(next(iter(spacings))):
        cand.rejected = "slice positions are sheared (gantry tilt?): not a regular volume"
        return
    cand.files = [cand.files[i] for i in order]
    if len(cand.headers) == len(order):
        cand.headers = [cand.headers[i] for i in order]
    cand.slice_spacing_mm = median
    cand.pixel_spacing_mm = tuple(float(v) for v in next(iter(spacings)))  # type: ignore[assignment]


def scan_series(inputs: Path | str | Iterable[Path | str]) -> tuple[list[SeriesCandidate], list[tuple[Path, str]]]:
    """Read headers of every file under ``inputs``; group by series and check each series.

    Returns the candidates (usable or with ``rejected`` set) and the files that are not CT images.
    """
    files = _iter_files(inputs)
    by_series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    ignored: list[tuple[Path, str]] = []
    rejected_series: dict[str, SeriesCandidate] = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            ignored.append((path, f"not DICOM ({exc.__class__.__name__})"))
            continue
        sop_class = str(ds.get("SOPClassUID", ""))
        series_uid = str(ds.get("SeriesInstanceUID", ""))
        if not series_uid:
            ignored.append((path, "no SeriesInstanceUID"))
            continue
        reason = None
        if sop_class == ENHANCED_CT_IMAGE_STORAGE:
            reason = "Enhanced (multi-frame) CT is not supported; send classic CT Image Storage"
        elif sop_class != CT_IMAGE_STORAGE or str(ds.get("Modality", "")) != "CT":
            ignored.append((path, f"not a CT image (SOP class {sop_class or '?'}, modality {ds.get('Modality', '?')})"))
            continue
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        if "LOCALIZER" in image_type:
            reason = "localizer (scout) images"
        if reason:
            cand = rejected_series.setdefault(
                series_uid,
                SeriesCandidate(series_uid, str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesDescription", "")),
                                rejected=reason),
            )
            cand.files.append(path)
            continue
        by_series[series_uid].append((path, ds))

    candidates: list[SeriesCandidate] = list(rejected_series.values())
    for series_uid, items in by_series.items():
        h0 = items[0][1]
        kernel = h0.get("ConvolutionKernel", "")
        if isinstance(kernel, (list, pydicom.multival.MultiValue)):
            kernel = "\\".join(str(k) for k in kernel)
        cand = SeriesCandidate(
            series_instance_uid=series_uid,
            study_instance_uid=str(h0.get("StudyInstanceUID", "")),
            description=str(h0.get("SeriesDescription", "")),
            kernel=str(kernel),
            files=[p for p, _ in items],
            headers=[ds for _, ds in items],
        )
        headers = cand.headers
        if len({str(ds.get("SOPInstanceUID", "")) for ds in headers}) != len(headers):
            cand.rejected = "duplicate SOP Instance UIDs in the series"
        else:
            _check_geometry(cand, headers)
        candidates.append(cand)
    return candidates, ignored


def select_series(inputs: Path | str | Iterable[Path | str]) -> SeriesSelection:
    """Pick the series to measure: usable axial CT, thinnest spacing, lung kernel, most slices.

    Raises :class:`SeriesSelectionError` (with every series and its reason) when none is usable.
    """
    candidates, ignored = scan_series(inputs)
    usable = [c for c in candidates if c.usable]
    if not usable:
        if not candidates:
            detail = "; ".join(f"{p.name}: {r}" for p, r in ignored[:5]) or "no files"
            raise SeriesSelectionError(f"no CT image series found ({detail})")
        raise SeriesSelectionError(
            "no CT series can be analysed: " + "; ".join(c.describe() for c in candidates)
        )
    # thinnest first (0.1 mm bins so 0.62 and 0.625 tie), then lung kernel, then coverage
    usable.sort(key=lambda c: (round(c.slice_spacing_mm or 99.0, 1), not c.lung_kernel, -len(c.files)))
    chosen = usable[0]
    others = [c for c in candidates if c is not chosen]
    for c in others:
        if c.usable:
            c_reason = "usable, but a thinner or lung-kernel series was preferred"
            c.rejected = c_reason
    return SeriesSelection(chosen=chosen, others=others, ignored_files=ignored)


def series_files(selection: SeriesSelection) -> Sequence[Path]:
    return selection.chosen.files
