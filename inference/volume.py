"""Load a CT series into a :class:`~inference.types.CTVolume`: HU as int16 with full geometry.

pydicom decodes every transfer syntax it has a handler for (compressed JPEG, JPEG-LS, JPEG 2000 and
RLE through the pylibjpeg plugins). Rescale slope/intercept are applied per slice (they may differ
between slices). The headers (without pixel data) are kept for the DICOM writers, which need to
reference their source images.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from .series import SeriesSelection, SeriesSelectionError, select_series
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


_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def _raw_frame(path: Path | str, ds: Dataset) -> np.ndarray | None:
    """The pixel values of an uncompressed little-endian, single-frame, 16-bit slice, read straight
    from the end of the file, where its Pixel Data element is; None whenever that is not exactly the
    case (then pydicom decodes the file as usual).

    ``ds`` is the slice's header read without pixel data. The element header before the last
    ``Rows × Columns × 2`` bytes must be (7FE0,0010) with that length. Values are what pydicom's
    ``pixel_array`` gives: signed data only when all 16 bits are stored (pydicom sign-extends
    narrower ones), unsigned data only when no value has bits above ``BitsStored``.
    """
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if ts not in (_EXPLICIT_LE, _IMPLICIT_LE):
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits, stored, signed = int(ds.BitsAllocated), int(ds.BitsStored), int(ds.PixelRepresentation)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if bits != 16 or samples != 1 or frames != 1 or (signed and stored != 16) or not 0 < stored <= 16:
        return None
    nbytes = rows * cols * 2
    head = 12 if ts == _EXPLICIT_LE else 8
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size < nbytes + head:
                return None
            fh.seek(size - nbytes - head)
            buf = fh.read(nbytes + head)
    except OSError:
        return None
    if len(buf) != nbytes + head or buf[:4] != _PIXEL_DATA_TAG:
        return None
    if ts == _EXPLICIT_LE:
        if buf[4:6] not in (b"OW", b"OB") or buf[6:8] != b"\0\0" or int.from_bytes(buf[8:12], "little") != nbytes:
            return None
    elif int.from_bytes(buf[4:8], "little") != nbytes:
        return None
    arr = np.frombuffer(buf, dtype="<i2" if signed else "<u2", offset=head).reshape(rows, cols)
    if not signed and stored < 16 and int(arr.max()) >> stored:
        return None
    return arr


def load_volume(files: Sequence[Path | str], *, keep_headers: bool = True,
                headers: Sequence[Dataset] | None = None) -> CTVolume:
    """Read sorted slice files (one series) into a CTVolume in HU.

    ``files`` must be in slice order as returned by :func:`inference.series.select_series`;
    ``headers``, when given, are their header-only datasets (``SeriesCandidate.headers``): slices
    stored uncompressed are then read without parsing their headers a second time.
    """
    if not files:
        raise VolumeLoadError("no slice files given")
    if headers is not None and len(headers) != len(files):
        headers = None
    kept: list[Dataset] = []
    hu: np.ndarray | None = None
    for z, path in enumerate(files):
        pixels = _raw_frame(path, headers[z]) if headers is not None else None
        if pixels is not None:
            ds = headers[z]  # type: ignore[index]
        else:
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
        kept.append(ds)
    assert hu is not None
    geometry = geometry_from_headers(kept)
    h0 = kept[0]
    return CTVolume(
        hu=hu,
        geometry=geometry,
        study_instance_uid=str(h0.get("StudyInstanceUID", "")),
        series_instance_uid=str(h0.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(h0.get("FrameOfReferenceUID", "")),
        sop_instance_uids=[str(h.get("SOPInstanceUID", "")) for h in kept],
        study_date=_parse_date(h0.get("StudyDate") or h0.get("SeriesDate") or h0.get("AcquisitionDate")),
        patient_id=str(h0.get("PatientID", "")),
        series_description=str(h0.get("SeriesDescription", "")),
        slice_datasets=kept if keep_headers else [],
    )


def load_study(inputs: Path | str | Iterable[Path | str]) -> CTVolume:
    """Select the best series under ``inputs`` and load it.

    Raises :class:`~inference.series.SeriesSelectionError` or :class:`VolumeLoadError` with the reason
    when nothing can be analysed.
    """
    return load_selected(select_series(inputs))


def load_selected(selection: SeriesSelection) -> CTVolume:
    """Load the series a :func:`~inference.series.select_series` call chose (its headers are reused)."""
    log.info("series selected", extra={"fields": {"series": selection.chosen.series_instance_uid,
                                                    "slices": len(selection.chosen.files),
                                                    "spacing_mm": selection.chosen.slice_spacing_mm,
                                                    "others": len(selection.others)}})
    return load_volume(selection.chosen.files, headers=selection.chosen.headers or None)


__all__ = ["VolumeLoadError", "SeriesSelectionError", "geometry_from_headers", "load_volume", "load_selected",
           "load_study"]
