"""TID 1500 Measurement Report (Comprehensive 3D SR) of the tracked nodules (highdicom).

Content tree (root: Imaging Measurement Report, observer = the NoduleTrack device):

* per nodule, **first** a planar group (TID 1410): the long axis as a 2-point SCOORD POLYLINE on the
  source slice where it is longest, with long- and short-axis lengths. Viewers such as OHIF draw only
  measurements that carry image coordinates; placed first with the same tracking UID, the volumetric
  group's values are merged into that drawn annotation (PEERS.md).
* per nodule, a volumetric group (TID 1411) with the **same tracking UID**, referencing the nodule's
  SEG segment: finding (nodule), finding site (lung, with laterality), volume, long/short axis, mean
  diameter, mean attenuation, consistency (RadLex), the prior time point's values, growth (volume
  change %, volume doubling time), the growth model's predicted volume and diameter at the forecast
  date (with their band and the model version as the measurement's algorithm), the per-nodule
  guideline result, and the rationale text.
* the study's recommendation in the report's own "Qualitative Evaluations" container (TID 1500 row
  for document-level evaluations): guideline, Lung-RADS category or Fleischner recommendation,
  recommended follow-up interval (DCM 111055, months; min and max as derivations), due date
  (DCM 111054) and the rationale. Not a measurement group: OHIF 3.13's SR viewport stops drawing
  the whole report when a measurement group has no image coordinates (seen in
  tests/test_viewer_ohif.py), and a study-level recommendation has none.

Concepts without a standard code use the private scheme ``99NDLTRK`` declared in the Coding Scheme
Identification Sequence (reports.codes). A changed result references the SR it replaces through the
Predecessor Documents Sequence.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as _dcm_codes

from inference.types import CTVolume, NoduleMeasurement, TrackedNodule
from reports import codes
from reports.seg import (
    GROWTH_MODEL_NAME,
    MANUFACTURER,
    SOFTWARE_NAME,
    SegResult,
    declare_private_scheme,
    device_uid,
    forecast_date,
    software_version,
)
from reports.uids import ObjectUIDs, Predecessor, content_digest, derived_uid, object_uids

SR_SERIES_NUMBER = 9702
SR_SERIES_DESCRIPTION = "NoduleTrack SR"

_LEFT = hd.sr.CodedConcept("7771000", "SCT", "Left")
_RIGHT = hd.sr.CodedConcept("24028007", "SCT", "Right")


@runtime_checkable
class StudyRecommendationLike(Protocol):
    """What the SR reads from the guideline engine's study recommendation (reports.guidelines).

    ``per_nodule`` is optional: a mapping from tracking UID to an object or mapping with any of
    ``category``, ``text``/``recommendation``, ``followup_months_min``/``max``.
    """

    guideline: str
    category: str | None
    followup_months_min: float | None
    followup_months_max: float | None
    due_date: _dt.date | None
    text: str


@dataclass(frozen=True)
class SRResult:
    dataset: hd.sr.Comprehensive3DSR
    uids: ObjectUIDs


def _field(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return None


def _per_nodule(recommendation: StudyRecommendationLike | None, tracking_uid: str) -> Any:
    if recommendation is None:
        return None
    table = _field(recommendation, "per_nodule", "nodules", "per_nodule_results")
    if table is None:
        return None
    if isinstance(table, Mapping):
        return table.get(tracking_uid)
    for item in table:  # a list of results carrying their tracking UID
        if _field(item, "tracking_uid") == tracking_uid:
            return item
    return None


def _is_lung_rads(guideline: str | None) -> bool:
    return bool(guideline) and "lung" in guideline.lower() and "rads" in guideline.lower().replace("-", "")


def _text(name: hd.sr.CodedConcept | Any, value: str) -> hd.sr.TextContentItem:
    # TEXT is UT in SR: no practical length limit, but keep control characters out.
    clean = " ".join(str(value).split())
    return hd.sr.TextContentItem(name=name, value=clean, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _date(name: Any, value: _dt.date) -> hd.sr.DateContentItem:
    return hd.sr.DateContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _num(name: Any, value: float, unit: Any, **kw: Any) -> hd.sr.Measurement:
    # Four significant decimals is far below any measurement's precision and keeps DS values short.
    return hd.sr.Measurement(name=name, value=round(float(value), 4), unit=unit, **kw)


def _slice_dataset(volume: CTVolume, z: int) -> Dataset:
    if not 0 <= z < len(volume.slice_datasets):
        raise ValueError(f"long_axis_slice {z} is outside the series (0..{len(volume.slice_datasets) - 1})")
    return volume.slice_datasets[z]


def _long_axis_region(volume: CTVolume, m: NoduleMeasurement) -> hd.sr.ImageRegion:
    """The long axis as a 2-point POLYLINE in the pixel coordinates of the slice it was measured on."""
    z = int(m.long_axis_slice)
    ds = _slice_dataset(volume, z)
    idx = volume.geometry.lps_to_index(np.asarray(m.long_axis_endpoints_mm, dtype=float))  # (2, 3) z, y, x
    if np.any(np.abs(idx[:, 0] - z) > 0.51):
        raise ValueError(
            f"long-axis end points lie on slices {idx[:, 0].round(2).tolist()}, not on long_axis_slice {z}"
        )
    # DICOM pixel coordinates: (column, row), the top-left corner of the first pixel is (0, 0),
    # so a pixel centre at index (r, c) is (c + 0.5, r + 0.5).
    graphic = np.stack([idx[:, 2] + 0.5, idx[:, 1] + 0.5], axis=1)
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=graphic,
        source_image=hd.sr.SourceImageForRegion.from_source_image(ds),
    )


def _algorithm() -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=SOFTWARE_NAME, version=software_version())


def _growth_algorithm(model_version: str) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=GROWTH_MODEL_NAME, version=model_version, parameters=[f"{SOFTWARE_NAME} {software_version()}"])


def _finding_site(m: NoduleMeasurement) -> hd.sr.FindingSite:
    # LPS: +x points to the patient's left.
    return hd.sr.FindingSite(anatomic_location=codes.LUNG, laterality=_LEFT if m.center_mm[0] > 0 else _RIGHT)


def _planar_group(volume: CTVolume, n: TrackedNodule, m: NoduleMeasurement) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    tracking = hd.sr.TrackingIdentifier(uid=n.tracking_uid, identifier=n.tracking_id)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_region=_long_axis_region(volume, m),
        finding_type=codes.NODULE,
        algorithm_id=_algorithm(),
        finding_sites=[_finding_site(m)],
        measurements=[
            _num(codes.LONG_AXIS, m.long_axis_mm, codes.UNIT_MM),
            _num(codes.SHORT_AXIS, m.short_axis_mm, codes.UNIT_MM),
        ],
    )


_GUIDELINE_NAMES = {"lungrads2022": "Lung-RADS v2022", "fleischner2017": "Fleischner Society 2017",
                    "vdt": "Volume doubling time (NELSON/BTS)"}


def guideline_name(key: str | None) -> str:
    """Readable name of a guideline key from reports.guidelines ("lungrads2022" → "Lung-RADS v2022")."""
    return _GUIDELINE_NAMES.get(str(key), str(key))


def _guideline_items(result: Any, guideline: str | None) -> tuple[list[hd.sr.QualitativeEvaluation], list[Any], list[Any]]:
    """(qualitative evaluations, measurements, extra content items) for one guideline result."""
    qual: list[hd.sr.QualitativeEvaluation] = []
    meas: list[Any] = []
    extra: list[Any] = []
    if result is None:
        return qual, meas, extra
    g = _field(result, "guideline") or guideline
    category = _field(result, "category")
    text = _field(result, "text", "recommendation", "management")
    if category and _is_lung_rads(g):
        qual.append(hd.sr.QualitativeEvaluation(codes.LUNG_RADS_CATEGORY, codes.lung_rads_value(str(category))))
        if str(category).strip().upper().endswith("S"):
            extra.append(_text(codes.LUNG_RADS_S_MODIFIER, "S: clinically significant finding unrelated to lung cancer"))
    elif category:
        extra.append(_text(codes.GUIDELINE_CATEGORY, f"{guideline_name(g)}: {category}"))
    lo, hi = _field(result, "followup_months_min"), _field(result, "followup_months_max")
    meas.extend(_interval_measurements(lo, hi))
    due = _field(result, "due_date")
    if isinstance(due, str):
        due = _dt.date.fromisoformat(due)
    if isinstance(due, _dt.date):
        extra.append(_date(codes.RECOMMENDED_FOLLOWUP_DATE, due))
    if text:
        name = codes.FLEISCHNER_RECOMMENDATION if (g and "fleischner" in g.lower()) else (
            codes.VDT_RECOMMENDATION if (g and g.lower() == "vdt") else codes.RECOMMENDED_FOLLOWUP)
        extra.append(_text(name, str(text)))
    return qual, meas, extra


def _interval_measurements(lo: float | None, hi: float | None) -> list[hd.sr.Measurement]:
    """DCM 111055 in months; a range is two items with derivation Minimum / Maximum (CID 7464)."""
    if lo is None and hi is None:
        return []
    if lo is not None and hi is not None and float(lo) > float(hi):
        raise ValueError(f"followup_months_min {lo} > followup_months_max {hi}")
    if lo is not None and hi is not None and float(lo) == float(hi):
        return [_num(codes.RECOMMENDED_FOLLOWUP_INTERVAL, lo, codes.UNIT_MONTHS)]
    out = []
    if lo is not None:
        out.append(_num(codes.RECOMMENDED_FOLLOWUP_INTERVAL, lo, codes.UNIT_MONTHS, derivation=codes.MINIMUM))
    if hi is not None:
        out.append(_num(codes.RECOMMENDED_FOLLOWUP_INTERVAL, hi, codes.UNIT_MONTHS, derivation=codes.MAXIMUM))
    return out


def _vdt_band(n: TrackedNodule) -> str | None:
    """CLINICAL.md bands; "<400" strict, 400 and 600 both in "400-600"."""
    if n.prior is None or n.current is None:
        return None
    if n.current.volume_mm3 < n.prior.volume_mm3:
        return "decreasing"
    if n.vdt_days is None:
        return "no_growth"
    if n.vdt_days < 400:
        return "<400"
    return "400-600" if n.vdt_days <= 600 else ">600"


def _volumetric_group(
    volume: CTVolume, n: TrackedNodule, m: NoduleMeasurement, seg: SegResult, recommendation: StudyRecommendationLike | None,
    prior_study_date: _dt.date | None,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    segment = seg.segment_for(n.tracking_uid)
    ref = hd.sr.ReferencedSegment(
        sop_class_uid=seg.dataset.SOPClassUID,
        sop_instance_uid=seg.dataset.SOPInstanceUID,
        segment_number=segment.segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(volume.series_instance_uid),
    )
    # Order matters for viewers that show only the first few values (OHIF): volume, mean diameter
    # and growth first, then the rest.
    measurements: list[hd.sr.Measurement] = [
        _num(codes.VOLUME, m.volume_mm3, codes.UNIT_MM3),
        _num(codes.DIAMETER, m.mean_diameter_mm, codes.UNIT_MM, derivation=codes.MEAN),
    ]
    if n.prior is not None and n.vdt_days is not None:
        measurements.append(_num(codes.VOLUME_DOUBLING_TIME, n.vdt_days, codes.UNIT_DAYS))
    if n.prior is not None and n.volume_change_pct is not None:
        measurements.append(_num(codes.VOLUME_CHANGE_PCT, n.volume_change_pct, codes.UNIT_PERCENT))
    measurements += [
        _num(codes.LONG_AXIS, m.long_axis_mm, codes.UNIT_MM),
        _num(codes.SHORT_AXIS, m.short_axis_mm, codes.UNIT_MM),
        _num(codes.ATTENUATION, m.mean_hu, codes.UNIT_HU, derivation=codes.MEAN),
    ]
    qualitative = [
        hd.sr.QualitativeEvaluation(codes.NODULE_CONSISTENCY, codes.CONSISTENCY_VALUES[m.consistency]),
        hd.sr.QualitativeEvaluation(codes.NODULE_STATUS, codes.NODULE_STATUS_VALUES[n.status]),
    ]
    extra: list[Any] = []
    p = n.prior
    if p is not None:
        measurements += [
            _num(codes.PRIOR_VOLUME, p.volume_mm3, codes.UNIT_MM3),
            _num(codes.PRIOR_LONG_AXIS, p.long_axis_mm, codes.UNIT_MM),
            _num(codes.PRIOR_SHORT_AXIS, p.short_axis_mm, codes.UNIT_MM),
            _num(codes.PRIOR_MEAN_DIAMETER, p.mean_diameter_mm, codes.UNIT_MM),
        ]
        if n.interval_days is not None:
            measurements.append(_num(codes.INTERVAL_SINCE_PRIOR, n.interval_days, codes.UNIT_DAYS))
        if prior_study_date is not None:
            extra.append(_date(codes.PRIOR_STUDY_DATE, prior_study_date))
        band = _vdt_band(n)
        if band is not None:
            qualitative.append(hd.sr.QualitativeEvaluation(codes.VDT_BAND, codes.VDT_BAND_VALUES[band]))
    f = n.forecast
    if f is not None:
        growth_algo = _growth_algorithm(f.model_version)
        measurements += [
            _num(codes.FORECAST_HORIZON, f.horizon_days, codes.UNIT_DAYS),
            _num(codes.PREDICTED_VOLUME, f.volume_mm3, codes.UNIT_MM3, algorithm_id=growth_algo),
            _num(codes.PREDICTED_VOLUME_LOW, f.volume_low_mm3, codes.UNIT_MM3, algorithm_id=growth_algo),
            _num(codes.PREDICTED_VOLUME_HIGH, f.volume_high_mm3, codes.UNIT_MM3, algorithm_id=growth_algo),
            _num(codes.PREDICTED_DIAMETER, f.mean_diameter_mm, codes.UNIT_MM, algorithm_id=growth_algo),
            _num(codes.PREDICTED_DIAMETER_LOW, f.mean_diameter_low_mm, codes.UNIT_MM, algorithm_id=growth_algo),
            _num(codes.PREDICTED_DIAMETER_HIGH, f.mean_diameter_high_mm, codes.UNIT_MM, algorithm_id=growth_algo),
        ]
        when = forecast_date(volume.study_date, f.horizon_days)
        if when is not None:
            extra.append(_date(codes.FORECAST_DATE, when))
        extra.append(_text(codes.GROWTH_MODEL_VERSION, f"{GROWTH_MODEL_NAME} {f.model_version} (AI prediction)"))
    result = _per_nodule(recommendation, n.tracking_uid)
    gq, gm, gx = _guideline_items(result, recommendation.guideline if recommendation is not None else None)
    qualitative += gq
    measurements += gm
    extra += gx
    extra.append(_text(codes.FINDING_SUMMARY, _nodule_summary(n, m)))

    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=n.tracking_uid, identifier=n.tracking_id),
        referenced_segment=ref,
        finding_type=codes.NODULE,
        algorithm_id=_algorithm(),
        finding_sites=[_finding_site(m)],
        measurements=measurements,
        qualitative_evaluations=qualitative,
    )
    # TID 1411 has no rows for DATE/TEXT; they are appended to the group's content (CONTAINS), which
    # the Comprehensive 3D SR IOD allows and highdicom/dsrdump/OHIF read without complaint.
    group[0].ContentSequence.extend(extra)
    return group


def _fmt(v: float | None, unit: str, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f} {unit}"


def _nodule_summary(n: TrackedNodule, m: NoduleMeasurement) -> str:
    """One readable sentence group of what was measured and predicted (the guideline text is separate)."""
    parts = [
        f"{n.tracking_id} ({n.status}): {m.consistency.replace('_', '-')}, volume {_fmt(m.volume_mm3, 'mm3', 0)}, "
        f"mean diameter {_fmt(m.mean_diameter_mm, 'mm')} (long {_fmt(m.long_axis_mm, 'mm')}, short {_fmt(m.short_axis_mm, 'mm')})."
    ]
    if n.prior is not None:
        growth = (
            "decreasing" if n.current is not None and n.current.volume_mm3 < n.prior.volume_mm3
            else ("no growth" if n.vdt_days is None else f"VDT {n.vdt_days:.0f} days")
        )
        parts.append(
            f"Prior {_fmt(n.prior.volume_mm3, 'mm3', 0)} {n.interval_days if n.interval_days is not None else '?'} days earlier: "
            f"change {_fmt(n.volume_change_pct, '%')}, {growth}."
        )
    if n.forecast is not None:
        f = n.forecast
        parts.append(
            f"{GROWTH_MODEL_NAME} {f.model_version} predicts {f.volume_mm3:.0f} mm3 "
            f"({f.volume_low_mm3:.0f}-{f.volume_high_mm3:.0f}) at +{f.horizon_days} days (AI prediction, not a measurement)."
        )
    return " ".join(parts)


def _study_evaluations(
    recommendation: StudyRecommendationLike | None, resolved: Sequence[TrackedNodule]
) -> hd.sr.ContainerContentItem:
    """The root's "Qualitative Evaluations" container: the study recommendation and resolved nodules.

    TID 1500 lists CODE and TEXT items for this container; the follow-up interval (NUM, with its
    derivation) and due date (DATE) are added too, as the Comprehensive 3D SR IOD allows, so that
    the study's interval and date sit next to its category. A nodule seen on the prior but not on
    the current study has no image region to measure; it is listed here as text with its tracking
    UID so that the follow-up history stays complete.
    """
    items: list[Any] = []
    if recommendation is not None:
        qual, meas, extra = _guideline_items(recommendation, recommendation.guideline)
        items.append(_text(codes.GUIDELINE, guideline_name(recommendation.guideline)))
        items += [q[0] for q in qual]
        items += [m[0] for m in meas]
        items += extra
        if recommendation.text and not any(getattr(e, "TextValue", None) == " ".join(recommendation.text.split()) for e in extra):
            items.append(_text(codes.RATIONALE, recommendation.text))
    for n in resolved:
        p = n.prior
        was = f" (prior volume {p.volume_mm3:.0f} mm3, mean diameter {p.mean_diameter_mm:.1f} mm)" if p is not None else ""
        items.append(_text(codes.FINDING_SUMMARY, f"{n.tracking_id} (tracking UID {n.tracking_uid}): resolved, "
                                                  f"not seen on the current study{was}."))
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _recommendation_digest(recommendation: StudyRecommendationLike | None) -> Any:
    if recommendation is None:
        return None
    fields = ("guideline", "category", "followup_months_min", "followup_months_max", "due_date", "text")
    per = _field(recommendation, "per_nodule", "nodules", "per_nodule_results")
    # Hashed canonically (floats at the digest's precision), not as repr(): a repr carries every
    # last bit of an unrounded VDT, and any object without a value repr would carry its address.
    return [_field(recommendation, f) for f in fields] + [per]


def _no_nodule_group(volume: CTVolume) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group saying that the nodule search ran on this series and found nothing.

    Coded twice so that any reader finds it: CAD Processing and Findings Summary (DCM 111017) =
    "All algorithms succeeded; without findings" (DCM 111241, CID 6047, as CAD SRs say it), and
    Nodule (SCT 27925004) = Absent (SCT 272519000); with the algorithm that looked (TID 4019) and
    the analysed series as the group's source. Its tracking UID is derived from the series, so a
    re-run states the same "no nodules" finding under the same UID.
    """
    tracking = hd.sr.TrackingIdentifier(
        uid=derived_uid("no-nodules", volume.study_instance_uid, volume.series_instance_uid),
        identifier="Lung nodule search",
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=codes.NODULE,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.LUNG)],
        algorithm_id=_algorithm(),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(codes.CAD_PROCESSING_SUMMARY, codes.ALL_SUCCEEDED_WITHOUT_FINDINGS),
            hd.sr.QualitativeEvaluation(codes.NODULE, codes.ABSENT),
        ],
    )
    group[0].ContentSequence.append(_text(
        codes.FINDING_SUMMARY,
        f"No lung nodules detected by {SOFTWARE_NAME} {software_version()} on series {volume.series_instance_uid} "
        f"({len(volume.slice_datasets)} slices). AI output, not a diagnosis.",
    ))
    return group


def build_sr(
    volume: CTVolume,
    nodules: Sequence[TrackedNodule],
    seg: SegResult | None,
    recommendation: StudyRecommendationLike | None,
    *,
    model_version: str,
    prior_study_date: _dt.date | None = None,
    predecessor: Predecessor | None = None,
    series_number: int = SR_SERIES_NUMBER,
) -> SRResult:
    """Build the TID 1500 SR for the current study ``volume``.

    ``seg`` is the SEG written for the same study (its segments are referenced); nodules without a
    current measurement (resolved) have no measurement group but are listed in the report's
    Qualitative Evaluations, so pass all tracked nodules. ``predecessor`` is the SR
    this one replaces, if a previous run wrote a different result for the study.

    When no nodule is present on the current study, pass ``seg=None`` (a SEG with no segment is not
    a valid object): the report then states that no nodules were detected (:func:`_no_nodule_group`)
    next to the guideline's result for that case, and lists resolved nodules if any.
    """
    present = [n for n in nodules if n.current is not None]
    resolved = [n for n in nodules if n.current is None]
    if present and seg is None:
        raise ValueError("nodules with a current measurement need their SEG (build_seg) to be referenced")
    if not present and seg is not None:
        raise ValueError("a SEG was given but no nodule has a current measurement")
    if seg is not None and seg.dataset.StudyInstanceUID != volume.study_instance_uid:
        raise ValueError("the SEG belongs to another study than the volume")
    if not present and not volume.slice_datasets:
        raise ValueError("CTVolume.slice_datasets is empty: the report references the analysed series")
    if recommendation is not None and not isinstance(recommendation, StudyRecommendationLike):
        raise TypeError("recommendation must have guideline, category, followup_months_min/max, due_date and text")

    groups: list[Any] = []
    for n in present:
        m = n.current
        assert m is not None and seg is not None
        groups.append(_planar_group(volume, n, m))
        groups.append(_volumetric_group(volume, n, m, seg, recommendation, prior_study_date))
    if not present:
        groups.append(_no_nodule_group(volume))

    digest = content_digest(
        "sr", volume.study_instance_uid, volume.series_instance_uid,
        seg.dataset.SOPInstanceUID if seg is not None else list(volume.sop_instance_uids),
        [(n.tracking_uid, n.tracking_id, n.status, n.current, n.prior, n.interval_days, n.vdt_days, n.volume_change_pct,
          n.forecast) for n in present],
        _recommendation_digest(recommendation), prior_study_date,
        [(n.tracking_uid, n.tracking_id, n.prior) for n in resolved],
    )
    uids = object_uids(volume.study_instance_uid, "sr", digest, model_version)

    # Without nodules the growth model did not run: name only our own software.
    versions = [software_version(), f"{GROWTH_MODEL_NAME} {model_version}"] if present else [software_version()]
    observer = hd.sr.ObserverContext(
        observer_type=_dcm_codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(), name=SOFTWARE_NAME, manufacturer_name=MANUFACTURER,
            model_name=f"{SOFTWARE_NAME} " + " / ".join(versions),
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.CT_CHEST,
        imaging_measurements=groups,
        title=codes.IMAGING_MEASUREMENT_REPORT,
    )
    if recommendation is not None or resolved:
        report[0].ContentSequence.append(_study_evaluations(recommendation, resolved))
    previous = None
    if predecessor is not None:
        if predecessor.study_instance_uid != volume.study_instance_uid:
            raise ValueError("predecessor SR belongs to another study")
    if predecessor is not None and predecessor.sop_instance_uid != uids.sop_instance_uid:
        # (an unchanged result has the earlier SR's own UID: it replaces it, nothing to reference)
        prev = Dataset()
        prev.StudyInstanceUID = predecessor.study_instance_uid
        prev.SeriesInstanceUID = predecessor.series_instance_uid
        prev.SOPInstanceUID = predecessor.sop_instance_uid
        prev.SOPClassUID = predecessor.sop_class_uid
        previous = [prev]

    if seg is not None:
        # Evidence = what the content references: the SEG and the long-axis slices (not the whole
        # series: highdicom's per-evidence work would dominate the SR's build time).
        evidence = [seg.dataset, *[volume.slice_datasets[z] for z in sorted({int(n.current.long_axis_slice) for n in present})]]  # type: ignore[union-attr]
    else:
        # "Nothing found" is a statement about the whole analysed series: all of it is the evidence.
        evidence = list(volume.slice_datasets)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=uids.series_instance_uid,
        series_number=series_number,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # unverified AI output: not a final, signed report
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        previous_versions=previous,
    )
    # Rationale texts carry "mm³", "≥", "–": encode the whole document as UTF-8.
    sr.SpecificCharacterSet = "ISO_IR 192"
    sr.SoftwareVersions = versions
    declare_private_scheme(sr)
    return SRResult(dataset=sr, uids=uids)


__all__ = ["SRResult", "StudyRecommendationLike", "build_sr"]
