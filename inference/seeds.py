"""Nodule seeds: points where a nodule is expected, from tracking, annotations or the detector.

:class:`Seed` is the common currency of the imaging core's finders. This module also reads seeds from
the annotations that can arrive with a prior study: TID 1500 SR (SCOORD3D centroids, tracking UIDs)
and SEG objects (segment centroids).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np

SeedSource = Literal["tracked", "annotation", "detector", "propagated"]

# (code value, coding scheme) of ``reports.codes.PREDICTED_EXTENT``, the modifier our SEG puts on a
# predicted-extent segment (inference does not import the writers; a test checks the two agree)
PREDICTED_EXTENT_CODE = ("NT-PRED", "99NDLTRK")


@dataclass
class Seed:
    """A point where a nodule is expected, in the LPS space of the study it belongs to."""

    center_mm: tuple[float, float, float]
    source: SeedSource
    tracking_uid: str | None = None
    tracking_id: str | None = None
    radius_mm: float = 5.0
    score: float = 0.0
    blobness: float = 1.0  # detector: |λ|min / |λ|max of the Hessian at the blob's scale (1 sphere, 0 tube)
    lung_fraction: float = 1.0  # detector: fraction of the surrounding shell inside the lung (< 1: at the wall)
    # detector, ground-glass reading (inference.candidates): the candidate's own density is subsolid
    # and ``blobness`` was read with denser tissue (vessels) set aside; the verification must then
    # find ground glass, or fall back on the plain reading (``plain_blobness``, ``plain_shell_ok``)
    glass_reading: bool = False
    plain_blobness: float = 1.0
    plain_shell_ok: bool = True
    shell_fraction: float = float("nan")  # detector: dense fraction of the shell it was read with



# --------------------------------------------------------------------------------------------------
# seeds from annotations that arrived with the prior
# --------------------------------------------------------------------------------------------------

# Plane geometry of a referenced image: position of the first pixel's centre, row and column
# direction cosines, and (row, column) spacing — what maps an SCOORD's pixel coordinates to LPS.
_PlaneGeometry = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]
_GEOMETRY_TAGS = ["Modality", "SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"]


def seeds_from_annotations(paths: Iterable[Path | str], reference_slices: Iterable[Any] = ()) -> list[Seed]:
    """Seed points from TID 1500 SR and SEG objects among ``paths`` (other files are ignored).

    SR: every SCOORD3D (POINT/POLYLINE/ELLIPSE...) gives its centroid; every SCOORD (pixel
    coordinates on an image, what viewers such as OHIF write and our own long axes) gives its
    centroid mapped to LPS through the referenced image's header when that image is among
    ``paths`` or ``reference_slices`` (header datasets, e.g. :attr:`CTVolume.slice_datasets` of the
    study the annotations belong to), and is skipped otherwise. Tracking
    UIDs (DCM 112040) and identifiers (112039) of the same measurement group are carried over.
    SEG: each segment's centroid from the frames' Image Position (Patient); predicted-extent
    segments are skipped (:func:`_is_prediction`).
    """
    import pydicom

    planes: dict[str, _PlaneGeometry] = {}
    for head in reference_slices:
        _add_plane(planes, head)
    annotations: list[Path | str] = []
    for path in paths:
        try:
            # a study directory holds hundreds of CT slices: read their plane geometry only, and
            # the whole file only for the annotations
            head = pydicom.dcmread(path, specific_tags=_GEOMETRY_TAGS)
        except Exception:
            continue
        if str(head.get("Modality", "")) in ("SR", "SEG"):
            annotations.append(path)
        else:
            _add_plane(planes, head)
    seeds: list[Seed] = []
    for path in annotations:
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue
        if ds.Modality == "SR":
            seeds.extend(_sr_seeds(ds, planes))
        else:
            seeds.extend(_seg_seeds(ds))
    return seeds


def _add_plane(planes: dict[str, _PlaneGeometry], head: Any) -> None:
    """Record an image header's plane geometry by SOP Instance UID (headers without one are skipped)."""
    try:
        iop = np.asarray([float(v) for v in head.ImageOrientationPatient], dtype=float)
        planes[str(head.SOPInstanceUID)] = (
            np.asarray([float(v) for v in head.ImagePositionPatient], dtype=float), iop[:3], iop[3:],
            (float(head.PixelSpacing[0]), float(head.PixelSpacing[1])))
    except (AttributeError, ValueError, TypeError, IndexError, KeyError):
        pass  # not an image with plane geometry


def _pixel_points_to_lps(graphic: list[float], plane: _PlaneGeometry) -> np.ndarray:
    """SCOORD (column, row) pixel coordinates to LPS. DICOM puts the top-left corner of the first
    pixel at (0, 0), so the first pixel's centre — Image Position (Patient) — is at (0.5, 0.5)."""
    ipp, row_dir, col_dir, (dy, dx) = plane
    cr = np.asarray(graphic, dtype=float).reshape(-1, 2) - 0.5
    return ipp + np.outer(cr[:, 0] * dx, row_dir) + np.outer(cr[:, 1] * dy, col_dir)


def _referenced_image(item) -> str | None:
    for child in item.get("ContentSequence") or []:
        if child.get("ValueType", "") == "IMAGE" and child.get("ReferencedSOPSequence"):
            return str(child.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return None


def _sr_seeds(ds, planes: dict[str, _PlaneGeometry] | None = None) -> list[Seed]:
    out: list[Seed] = []
    planes = planes or {}

    def seed_at(pts: np.ndarray, uid: str | None, label: str | None) -> Seed:
        c = pts.mean(axis=0)
        extent = float(np.max(np.linalg.norm(pts - c, axis=1))) if len(pts) > 1 else 5.0
        return Seed(tuple(float(v) for v in c), "annotation", uid, label, radius_mm=max(2.0, extent))

    def walk(items, uid: str | None, label: str | None) -> None:
        group_uid, group_label = uid, label
        for item in items:
            code = item.get("ConceptNameCodeSequence")
            cv = code[0].CodeValue if code else ""
            vt = item.get("ValueType", "")
            if vt == "UIDREF" and cv == "112040":
                group_uid = str(item.UID)
            if vt == "TEXT" and cv == "112039":
                group_label = str(item.TextValue)
        for item in items:
            vt = item.get("ValueType", "")
            if vt == "SCOORD3D" and "GraphicData" in item:
                pts = np.asarray([float(v) for v in item.GraphicData], dtype=float).reshape(-1, 3)
                out.append(seed_at(pts, group_uid, group_label))
            elif vt == "SCOORD" and "GraphicData" in item:
                plane = planes.get(_referenced_image(item) or "")
                if plane is not None:
                    out.append(seed_at(_pixel_points_to_lps(list(item.GraphicData), plane), group_uid, group_label))
            if "ContentSequence" in item:
                walk(item.ContentSequence, group_uid, group_label)

    if "ContentSequence" in ds:
        walk(ds.ContentSequence, None, None)
    # several coordinates of one measurement group (e.g. long-axis end points, or a planar and a
    # volumetric group of the same nodule) describe one nodule
    return _dedupe(out, 3.0)


def _seg_seeds(ds) -> list[Seed]:
    try:
        pixels = ds.pixel_array
    except Exception:
        return []
    if pixels.ndim == 2:
        pixels = pixels[None]
    pffg = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence")
    try:
        pm = shared[0].PixelMeasuresSequence[0]
        dy, dx = (float(v) for v in pm.PixelSpacing)
        iop = np.asarray([float(v) for v in shared[0].PlaneOrientationSequence[0].ImageOrientationPatient])
    except Exception:
        return []
    row, col = iop[:3], iop[3:]
    sums: dict[int, list[np.ndarray]] = {}
    labels: dict[int, tuple[str | None, str | None]] = {}
    for seg in ds.get("SegmentSequence") or []:
        if _is_prediction(seg):
            continue
        uid = str(seg.get("TrackingUID", "")) or None
        tid = str(seg.get("TrackingID", "")) or None
        labels[int(seg.SegmentNumber)] = (uid, tid)
    for k, fg in enumerate(pffg):
        try:
            num = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            if num not in labels:  # a predicted extent, or a frame of no described segment
                continue
            ipp = np.asarray([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient])
        except Exception:
            continue
        frame = pixels[k] > 0
        if not frame.any():
            continue
        rr, cc = np.nonzero(frame)
        pts = ipp + np.outer(cc * dx, row) + np.outer(rr * dy, col)
        sums.setdefault(num, []).append(pts)
    seeds = []
    for num, chunks in sums.items():
        pts = np.concatenate(chunks)
        c = pts.mean(axis=0)
        r = float(np.percentile(np.linalg.norm(pts - c, axis=1), 95))
        uid, tid = labels.get(num, (None, None))
        seeds.append(Seed(tuple(float(v) for v in c), "annotation", uid, tid, radius_mm=max(2.0, r)))
    return seeds


def _is_prediction(segment) -> bool:
    """A segment that shows where a nodule is expected to be, not where it was seen.

    Our SEG (``reports/seg.py``) stores each nodule's predicted extent next to it, with the
    Segmented Property Type modifier :data:`PREDICTED_EXTENT_CODE`; seeding the next analysis from it
    would look for the nodule at its forecast size and carry its "(predicted)" label over.
    """
    for prop in segment.get("SegmentedPropertyTypeCodeSequence") or []:
        for mod in prop.get("SegmentedPropertyTypeModifierCodeSequence") or []:
            if (str(mod.get("CodeValue", "")), str(mod.get("CodingSchemeDesignator", ""))) == PREDICTED_EXTENT_CODE:
                return True
    return False


def _dedupe(seeds: list[Seed], dist_mm: float) -> list[Seed]:
    kept: list[Seed] = []
    for s in seeds:
        c = np.asarray(s.center_mm)
        if any(np.linalg.norm(c - np.asarray(k.center_mm)) < max(dist_mm, 0.5 * k.radius_mm) and
               (s.tracking_uid is None or s.tracking_uid == k.tracking_uid) for k in kept):
            continue
        kept.append(s)
    return kept
