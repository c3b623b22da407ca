"""Load a CT series into a :class:`~inference.types.CTVolume`: HU as int16 with full geometry.

pydicom decodes every transfer syntax it has a handler for (compressed JPEG, JPEG-LS, JPEG 2000 and
RLE through the pylibjpeg plugins). Rescale slope/intercept are applied per slice (they may differ
between slices). The headers (without pixel data) are kept for the DICOM writers, which need to
reference their source images.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from .series import SeriesSelectionError, select_series
from .types import CTVolume, VolumeGeometry

log = logging.getLogger("noduletrack.inference.volume")


class VolumeLoadError(ValueError):
    """The chosen series cannot be turned into a volume (undecodable pixels, inconsistent slices)."""


def _parse_date(value: str | None) -> _dt.date | None:
    if not value:
        return None
    try:
        return _dt.datetime.strptime(str(value)[:8], "%Y%m%d").date()
    except ValueError:
        return None


def geometry_from_headers(headers: Sequence[Dataset]) -> VolumeGeometry:
    """Geometry of a stack of parallel, sorted, equally spaced slices (as series.py checked)."""
    h0 = headers[0]
    iop = np.asarray([float(v) for v in h0.ImageOrientationPatient], dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    p0 = np.asarray([float(v) for v in h0.ImagePositionPatient], dtype=float)
    if len(headers) > 1:
        p_last = np.asarray([float(v) for v in headers[-1].ImagePositionPatient], dtype=float)
        step = float((p_last - p0) @ normal) / (len(headers) - 1)
    else:
        step = float(h0.get("SliceThickness", 1.0) or 1.0)
    if step <= 0:
        raise VolumeLoadError("slices are not sorted along the slice normal")
    # PixelSpacing = (row spacing, column spacing) = (y, x)
    dy, dx = (float(v) for v in h0.PixelSpacing)
    direction = np.stack([row_dir, col_dir, normal], axis=1)  # columns = x, y, z axes
    return VolumeGeometry(
        origin=tuple(float(v) for v in p0),  # type: ignore[arg-type]
        spacing=(dx, dy, step),
        direction=tuple(float(v) for v in direction.ravel()),
        shape=(len(headers), int(h0.Rows), int(h0.Columns)),
    )


def load_volume(files: Sequence[Path | str], *, keep_headers: bool = True) -> CTVolume:
    """Read sorted slice files (one series) into a CTVolume in HU.

    ``files`` must be in slice order as returned by :func:`inference.series.select_series`.
    """
    if not files:
        raise VolumeLoadError("no slice files given")
    headers: list[Dataset] = []
    hu: np.ndarray | None = None
    for z, path in enumerate(files):
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except Exception as exc:  # decoders raise many types; report which file and why
            raise VolumeLoadError(f"cannot decode pixel data of {Path(path).name}: {exc}") from exc
        if pixels.ndim != 2:
            raise VolumeLoadError(f"{Path(path).name}: expected one 2-D frame, got shape {pixels.shape}")
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        if hu is None:
            hu = np.empty((len(files),) + pixels.shape, dtype=np.int16)
        elif pixels.shape != hu.shape[1:]:
            raise VolumeLoadError(f"{Path(path).name}: matrix {pixels.shape} differs from {hu.shape[1:]}")
        if slope == 1.0 and intercept == int(intercept):
            values = pixels.astype(np.int32) + int(intercept)
        else:
            values = np.rint(pixels.astype(np.float32) * slope + intercept)
        # HU below -1024 is padding (outside the reconstruction circle): clamp to air
        hu[z] = np.clip(values, -1024, 32767).astype(np.int16)
        if "PixelData" in ds:
            del ds.PixelData
        headers.append(ds)
    assert hu is not None
    geometry = geometry_from_headers(headers)
    h0 = headers[0]
    return CTVolume(
        hu=hu,
        geometry=geometry,
        study_instance_uid=str(h0.get("StudyInstanceUID", "")),
        series_instance_uid=str(h0.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(h0.get("FrameOfReferenceUID", "")),
        sop_instance_uids=[str(h.get("SOPInstanceUID", "")) for h in headers],
        study_date=_parse_date(h0.get("StudyDate") or h0.get("SeriesDate") or h0.get("AcquisitionDate")),
        patient_id=str(h0.get("PatientID", "")),
        series_description=str(h0.get("SeriesDescription", "")),
        slice_datasets=headers if keep_headers else [],
    )


def load_study(inputs: Path | str | Iterable[Path | str]) -> CTVolume:
    """Select the best series under ``inputs`` and load it.

    Raises :class:`~inference.series.SeriesSelectionError` or :class:`VolumeLoadError` with the reason
    when nothing can be analysed.
    """
    selection = select_series(inputs)
    log.info("series selected", extra={"fields": {"series": selection.chosen.series_instance_uid,
                                                    "slices": len(selection.chosen.files),
                                                    "spacing_mm": selection.chosen.slice_spacing_mm,
                                                    "others": len(selection.others)}})
    return load_volume(selection.chosen.files)


__all__ = ["VolumeLoadError", "SeriesSelectionError", "geometry_from_headers", "load_volume", "load_study"]
