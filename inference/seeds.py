"""Nodule seeds: points where a nodule is expected, from tracking, annotations or the detector.

:class:`Seed` is the common currency of the imaging core's finders. This module also reads seeds from
the annotations that can arrive with a prior study: TID 1500 SR (SCOORD3D centroids, tracking UIDs)
and SEG objects (segment centroids).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

SeedSource = Literal["tracked", "annotation", "detector", "propagated"]


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



# --------------------------------------------------------------------------------------------------
# seeds from annotations that arrived with the prior
# --------------------------------------------------------------------------------------------------

def seeds_from_annotations(paths: Iterable[Path | str]) -> list[Seed]:
    """Seed points from TID 1500 SR (image regions / 3-D coordinates) and SEG objects.

    SR: every SCOORD3D (POINT/POLYLINE/ELLIPSE...) gives its centroid; SCOORD on an image is mapped
    through the referenced slice's position when that slice's header is provided in the SR's own
    content (not available in general, so 2-D SCOORDs are skipped). Tracking UIDs (DCM 112040) in
    the same measurement group are carried over. SEG: each segment's centroid from the frames'
    Image Position (Patient). Files of other types are ignored.
    """
    import pydicom

    seeds: list[Seed] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue
        modality = str(ds.get("Modality", ""))
        if modality == "SR":
            seeds.extend(_sr_seeds(ds))
        elif modality == "SEG":
            seeds.extend(_seg_seeds(ds))
    return seeds


def _sr_seeds(ds) -> list[Seed]:
    out: list[Seed] = []

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
                c = pts.mean(axis=0)
                extent = float(np.max(np.linalg.norm(pts - c, axis=1))) if len(pts) > 1 else 5.0
                out.append(Seed(tuple(float(v) for v in c), "annotation", group_uid, group_label,
                                radius_mm=max(2.0, extent)))
            if "ContentSequence" in item:
                walk(item.ContentSequence, group_uid, group_label)

    if "ContentSequence" in ds:
        walk(ds.ContentSequence, None, None)
    # several SCOORD3Ds of one measurement group (e.g. long-axis endpoints) describe one nodule
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
        uid = str(seg.get("TrackingUID", "")) or None
        tid = str(seg.get("TrackingID", "")) or None
        labels[int(seg.SegmentNumber)] = (uid, tid)
    for k, fg in enumerate(pffg):
        try:
            num = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
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


def _dedupe(seeds: list[Seed], dist_mm: float) -> list[Seed]:
    kept: list[Seed] = []
    for s in seeds:
        c = np.asarray(s.center_mm)
        if any(np.linalg.norm(c - np.asarray(k.center_mm)) < max(dist_mm, 0.5 * k.radius_mm) and
               (s.tracking_uid is None or s.tracking_uid == k.tracking_uid) for k in kept):
            continue
        kept.append(s)
    return kept
