"""DICOM Segmentation (SEG) of the tracked nodules and of their predicted extent (highdicom).

One BINARY SEG per analysed study, in the original study (same Study Instance UID, patient module
copied from the source CT by highdicom), referencing the source CT slices:

* one segment per nodule seen on the current study ("Nodule 1", …);
* one segment per nodule whose growth model produced a predicted mask, labelled and described as an
  AI prediction at the forecast date ("Predicted extent at YYYY-MM-DD (MT-NoGNet vX, AI prediction)").

Every segment carries a tracking ID/UID. A current-nodule segment uses the nodule's own tracking UID
(the one the SR and every other study use); a predicted-extent segment gets its own tracking UID,
derived from the nodule's, so the two never collide in a viewer or an SR reference.

Only slices with content are encoded (the pixel array covers the z-range of the masks and highdicom
omits the remaining empty frames), so a SEG is small even on a 300-slice series.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as _dcm_codes

from inference.types import CTVolume, NoduleMeasurement, TrackedNodule
from reports import codes
from reports.uids import ObjectUIDs, Predecessor, content_digest, derived_uid, object_uids

MANUFACTURER = "NoduleTrack"
SOFTWARE_NAME = "NoduleTrack"
GROWTH_MODEL_NAME = "MT-NoGNet"
SEG_SERIES_NUMBER = 9701
SEG_SERIES_DESCRIPTION = "NoduleTrack SEG"

# Current nodules in distinct saturated colours; predictions in one pale orange so they read as
# "not measured" at a glance.
_NODULE_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (145, 30, 180), (70, 240, 240), (240, 50, 230)]
_PREDICTED_COLOR = (255, 170, 60)


def software_version() -> str:
    """The installed NoduleTrack version (falls back to the source tree's when not installed)."""
    try:
        return importlib.metadata.version("noduletrack")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0+unknown"


def device_uid() -> str:
    """A stable UID identifying this software as a device (SR observer context, SEG equipment)."""
    return derived_uid("device", SOFTWARE_NAME)


def forecast_date(study_date: _dt.date | None, horizon_days: int) -> _dt.date | None:
    """Calendar date the forecast refers to: the current study date plus the horizon."""
    if study_date is None:
        return None
    return study_date + _dt.timedelta(days=int(horizon_days))


def predicted_tracking_uid(tracking_uid: str, model_version: str) -> str:
    """Tracking UID of a nodule's predicted-extent segment (deterministic, distinct from the nodule's)."""
    return derived_uid("predicted-extent", tracking_uid, model_version)


def predecessor_reference(predecessor: Predecessor) -> Dataset:
    """A Referenced Image Sequence item pointing at the instance this object replaces.

    The SEG and Secondary Capture IODs have no "predecessor" attribute (SR has Predecessor Documents
    Sequence); the General Image module's Referenced Image Sequence with a Purpose of Reference code
    is the standard place for "another instance related to this one". No standard purpose code says
    "earlier version", so a private one is used (declared in the object's Coding Scheme
    Identification Sequence).
    """
    item = Dataset()
    item.ReferencedSOPClassUID = predecessor.sop_class_uid
    item.ReferencedSOPInstanceUID = predecessor.sop_instance_uid
    purpose = Dataset()
    purpose.CodeValue = codes.REPLACED_INSTANCE.value
    purpose.CodingSchemeDesignator = codes.REPLACED_INSTANCE.scheme_designator
    purpose.CodeMeaning = codes.REPLACED_INSTANCE.meaning
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def add_predecessor(dataset: Dataset, predecessor: Predecessor | None) -> None:
    """Reference ``predecessor`` from an image IOD (SEG, SC) and declare the private scheme.

    Callers may always pass the instance a previous run wrote: when it has the new object's own
    SOP Instance UID (unchanged result) no reference is added.
    """
    if predecessor is None:
        return
    if predecessor.study_instance_uid != dataset.StudyInstanceUID:
        raise ValueError(
            "predecessor belongs to another study "
            f"({predecessor.study_instance_uid} ≠ {dataset.StudyInstanceUID}); a result only replaces its own study's"
        )
    if predecessor.sop_instance_uid == dataset.SOPInstanceUID:
        # Same inputs, same result, same UID: this object *is* the earlier one (a re-run replaces
        # it in the PACS); referencing itself would be wrong, so there is nothing to add.
        return
    refs = list(getattr(dataset, "ReferencedImageSequence", []))
    refs.append(predecessor_reference(predecessor))
    dataset.ReferencedImageSequence = refs
    # Keep the Common Instance Reference module consistent: every referenced instance is listed.
    series_item = Dataset()
    series_item.SeriesInstanceUID = predecessor.series_instance_uid
    inst = Dataset()
    inst.ReferencedSOPClassUID = predecessor.sop_class_uid
    inst.ReferencedSOPInstanceUID = predecessor.sop_instance_uid
    series_item.ReferencedInstanceSequence = [inst]
    existing = list(getattr(dataset, "ReferencedSeriesSequence", []))
    existing.append(series_item)
    dataset.ReferencedSeriesSequence = existing
    declare_private_scheme(dataset)


def declare_private_scheme(dataset: Dataset) -> None:
    """Add the 99NDLTRK item to the Coding Scheme Identification Sequence (once)."""
    items = list(getattr(dataset, "CodingSchemeIdentificationSequence", []))
    if not any(getattr(i, "CodingSchemeDesignator", "") == codes.PRIVATE_DESIGNATOR for i in items):
        items.append(codes.coding_scheme_identification())
    dataset.CodingSchemeIdentificationSequence = items


@dataclass(frozen=True)
class SegmentInfo:
    """What one segment of the written SEG is (for the SR's referenced-segment items)."""

    segment_number: int
    tracking_uid: str
    tracking_id: str
    label: str
    predicted: bool
    nodule_tracking_uid: str


@dataclass
class SegResult:
    """The SEG dataset plus the segment map the SR needs."""

    dataset: hd.seg.Segmentation
    uids: ObjectUIDs
    segments: list[SegmentInfo] = field(default_factory=list)

    def segment_for(self, tracking_uid: str, predicted: bool = False) -> SegmentInfo:
        for s in self.segments:
            if s.nodule_tracking_uid == tracking_uid and s.predicted == predicted:
                return s
        raise KeyError(f"no {'predicted ' if predicted else ''}segment for tracking UID {tracking_uid}")


def _check_source(volume: CTVolume) -> None:
    if not volume.slice_datasets:
        raise ValueError("CTVolume.slice_datasets is empty: the SEG must reference the source CT slices")
    if len(volume.slice_datasets) != volume.hu.shape[0]:
        raise ValueError(f"{len(volume.slice_datasets)} slice datasets for {volume.hu.shape[0]} slices")
    for i, ds in enumerate(volume.slice_datasets):
        if getattr(ds, "StudyInstanceUID", None) != volume.study_instance_uid:
            raise ValueError(f"slice dataset {i} belongs to study {getattr(ds, 'StudyInstanceUID', None)}, not {volume.study_instance_uid}")
        if (int(ds.Rows), int(ds.Columns)) != tuple(volume.hu.shape[1:]):
            raise ValueError(f"slice dataset {i} is {ds.Rows}×{ds.Columns}, volume slices are {volume.hu.shape[1]}×{volume.hu.shape[2]}")


def _check_mask(mask: np.ndarray | None, offset: Sequence[int], shape: tuple[int, int, int], what: str) -> None:
    if mask is None or mask.ndim != 3:
        raise ValueError(f"{what}: mask must be a 3-D boolean array")
    for axis, (o, n, full) in enumerate(zip(offset, mask.shape, shape)):
        if o < 0 or o + n > full:
            raise ValueError(f"{what}: mask box [{o}, {o + n}) on axis {axis} leaves the volume (size {full})")
    if not mask.any():
        raise ValueError(f"{what}: mask is empty")


def clip_to_volume(
    mask: np.ndarray, offset: Sequence[int], shape: tuple[int, int, int]
) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """The part of a cropped mask box that lies inside the volume (``None`` when nothing does).

    A *predicted* extent may legitimately reach past the scanned field (a nodule near the edge of
    the coverage growing outwards); only the part inside the current grid can be encoded.
    """
    lo = [max(0, int(o)) for o in offset]
    hi = [min(full, int(o) + n) for o, n, full in zip(offset, mask.shape, shape)]
    if any(h <= l for l, h in zip(lo, hi)):
        return None
    sub = mask[tuple(slice(l - int(o), h - int(o)) for l, h, o in zip(lo, hi, offset))]
    if not sub.any():
        return None
    return np.asarray(sub, dtype=bool), (lo[0], lo[1], lo[2])


def _segment_label(text: str) -> str:
    # Segment Label is LO: at most 64 characters.
    return text if len(text) <= 64 else text[:61] + "..."


def build_seg(
    volume: CTVolume,
    nodules: Sequence[TrackedNodule],
    *,
    model_version: str,
    predecessor: Predecessor | None = None,
    series_number: int = SEG_SERIES_NUMBER,
) -> SegResult:
    """Build the SEG for ``volume`` (the current study) from its tracked nodules.

    ``nodules`` without a current measurement (resolved ones) are skipped; a nodule's forecast adds a
    predicted-extent segment when it has a mask. ``model_version`` is the growth model's version
    (part of the deterministic UIDs; a different model is a different result).
    """
    _check_source(volume)
    shape = tuple(volume.hu.shape)
    present = [n for n in nodules if n.current is not None]
    if not present:
        raise ValueError("no nodule with a current measurement: there is nothing to segment")
    if len({n.tracking_uid for n in present}) != len(present):
        raise ValueError("tracking UIDs must be unique among the nodules of one study")

    # (label text, tracking uid, tracking id, nodule uid, predicted?, mask, offset, description)
    planned: list[tuple[str, str, str, str, bool, np.ndarray, tuple[int, int, int], str]] = []
    for n in present:
        m: NoduleMeasurement = n.current  # type: ignore[assignment]
        _check_mask(m.mask, m.mask_offset, shape, f"{n.tracking_id} current mask")
        planned.append((n.tracking_id, n.tracking_uid, n.tracking_id, n.tracking_uid, False, m.mask, tuple(m.mask_offset),
                        f"{n.tracking_id}: {m.consistency.replace('_', '-')} nodule, {m.volume_mm3:.0f} mm3 (measured)"))
    for n in present:
        f = n.forecast
        if f is None or f.mask is None:
            continue
        if f.mask.ndim != 3:
            raise ValueError(f"{n.tracking_id} predicted mask: must be a 3-D boolean array")
        clipped = clip_to_volume(f.mask, f.mask_offset, shape)
        if clipped is None:  # the whole predicted extent lies outside the scanned volume
            continue
        pred_mask, pred_offset = clipped
        when = forecast_date(volume.study_date, f.horizon_days)
        when_text = when.isoformat() if when else f"+{f.horizon_days} days"
        model = f"{GROWTH_MODEL_NAME} v{f.model_version}"
        description = f"Predicted extent at {when_text} ({model}, AI prediction)"
        label = _segment_label(f"{n.tracking_id} predicted {when_text} (AI)")
        planned.append((label, predicted_tracking_uid(n.tracking_uid, f.model_version), f"{n.tracking_id} (predicted)",
                        n.tracking_uid, True, pred_mask, pred_offset, description))

    digest = content_digest(
        "seg", volume.study_instance_uid, volume.series_instance_uid, list(volume.sop_instance_uids),
        [(p[0], p[1], p[2], p[4], p[5], p[6], p[7]) for p in planned],
    )
    uids = object_uids(volume.study_instance_uid, "seg", digest, model_version)

    # Only the slices that hold any mask go into the pixel array and are passed as source images:
    # memory is k × rows × cols × segments and highdicom's per-source work scales with k, not with
    # the series length (a 300-slice series with 4 nodules has ~100 such slices).
    zs = sorted({oz + dz for (_, _, _, _, _, mask, (oz, _, _), _) in planned
                 for dz in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))})
    row_of = {z: i for i, z in enumerate(zs)}
    # Segment-major memory (a (frames, rows, cols, segments) *view* of a (segments, frames, rows,
    # cols) array): highdicom reduces over the segment axis (overlap check) and copies one
    # (frame, segment) plane at a time; with segments outermost both are whole-plane operations
    # instead of per-pixel strided ones (~1.5 s less for 8 segments over 90 slices of 512²).
    planes = np.zeros((len(planned), len(zs), shape[1], shape[2]), dtype=bool)
    for s, (_, _, _, _, _, mask, (oz, oy, ox), _) in enumerate(planned):
        dy, dx = mask.shape[1:]
        for dz in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
            planes[s, row_of[oz + dz], oy : oy + dy, ox : ox + dx] |= mask[dz]
    stack = np.moveaxis(planes, 0, -1)

    version = software_version()
    algo_nodule = hd.AlgorithmIdentificationSequence(
        name=SOFTWARE_NAME, family=_dcm_codes.cid7162.ArtificialIntelligence, version=version,
        parameters={"growth_model": f"{GROWTH_MODEL_NAME} {model_version}"},
    )
    descriptions: list[hd.seg.SegmentDescription] = []
    segments: list[SegmentInfo] = []
    for number, (label, tuid, tid, nuid, predicted, _mask, _off, text) in enumerate(planned, start=1):
        color = _PREDICTED_COLOR if predicted else _NODULE_COLORS[(number - 1) % len(_NODULE_COLORS)]
        desc = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            segmented_property_type=codes.NODULE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo_nodule,
            tracking_uid=tuid,
            tracking_id=tid,
            anatomic_regions=[codes.LUNG],
            display_color=hd.color.CIELabColor.from_rgb(*color),  # 0-255 RGB
        )
        desc.SegmentDescription = text[:1024]
        if predicted:
            # machine-readable: this segment is a forecast, not an observation (a reader seeding the
            # next analysis from this SEG, ours included, skips it by this modifier)
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(codes.PREDICTED_EXTENT.value, codes.PREDICTED_EXTENT.scheme_designator,
                                   codes.PREDICTED_EXTENT.meaning)]
        descriptions.append(desc)
        segments.append(SegmentInfo(number, tuid, tid, label, predicted, nuid))

    seg = hd.seg.Segmentation(
        source_images=[volume.slice_datasets[z] for z in zs],  # frame i ↔ source image i
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uids.series_instance_uid,
        series_number=series_number,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=SOFTWARE_NAME,
        software_versions=version,
        device_serial_number=device_uid()[-16:],
        content_description="Lung nodules (measured) and predicted extents (AI)",
        content_label="NODULES",
        series_description=SEG_SERIES_DESCRIPTION,
        omit_empty_frames=True,
    )
    # Segment descriptions and patient names may hold any character: UTF-8 throughout.
    seg.SpecificCharacterSet = "ISO_IR 192"
    # Both versions (ours and the growth model's) as a multi-valued LO.
    seg.SoftwareVersions = [version, f"{GROWTH_MODEL_NAME} {model_version}"]
    add_predecessor(seg, predecessor)
    return SegResult(dataset=seg, uids=uids, segments=segments)

