"""The DICOM writers (SEG, TID 1500 SR, key images) on phantom patients.

Every object must pass dicom3tools' dciodvfy with no error, read back with highdicom with the same
values, and parse with dcmtk's dsrdump; UIDs are deterministic and a changed result references the
instance it replaces.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from reports import codes
from reports.keyimages import build_key_images
from reports.seg import build_seg
from reports.sr import build_sr, guideline_name
from reports.uids import Predecessor, content_digest, object_uids
from tests.reports_fixtures import phantom_case, write_ct

MODEL = "test-1"
SEEDS = (1, 2, 3)  # 1: two tracked; 2: four incl. a new one; 3: a resolved nodule and an unchanged one
# dciodvfy knows no private coding scheme: "Unrecognized defined term <99NDLTRK>" is expected for
# every private code (PS3.3 allows 99-prefixed designators when declared, as we do).
_EXPECTED_WARNING = "Unrecognized defined term <99NDLTRK>"


@functools.lru_cache(maxsize=8)
def _build(seed: int, screening: bool = True):
    """SEG, SR and key images for a phantom case (cached: tests only read them)."""
    case = phantom_case(seed, screening=screening)
    seg = build_seg(case.current, case.nodules, model_version=MODEL)
    sr = build_sr(case.current, case.nodules, seg, case.recommendation, model_version=MODEL,
                  prior_study_date=case.prior.study_date)
    keys = build_key_images(case.prior, case.current, case.nodules, model_version=MODEL)
    return case, seg, sr, keys


def _check_valid(dciodvfy, path: Path, iod: str) -> None:
    result = dciodvfy(path)
    assert result.ok, f"{path.name}:\n" + "\n".join(result.errors)
    assert result.iod == iod, result.output[:500]
    unexpected = [w for w in result.warnings if _EXPECTED_WARNING not in w]
    assert not unexpected, f"{path.name} warnings:\n" + "\n".join(unexpected)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_object_passes_dciodvfy(seed: int, tmp_path: Path, dciodvfy) -> None:
    case, seg, sr, keys = _build(seed)
    seg.dataset.save_as(tmp_path / "seg.dcm")
    sr.dataset.save_as(tmp_path / "sr.dcm")
    _check_valid(dciodvfy, tmp_path / "seg.dcm", "Segmentation")
    _check_valid(dciodvfy, tmp_path / "sr.dcm", "Comprehensive3DSR")
    assert len(keys) == sum(n.current is not None for n in case.nodules)
    for i, k in enumerate(keys):
        k.dataset.save_as(tmp_path / f"key{i}.dcm")
        _check_valid(dciodvfy, tmp_path / f"key{i}.dcm", "SCImage")
    # Same study, patient copied from the source, new series with clear descriptions.
    src = case.current.slice_datasets[0]
    for ds in [seg.dataset, sr.dataset, *[k.dataset for k in keys]]:
        assert ds.StudyInstanceUID == case.current.study_instance_uid
        assert ds.PatientID == src.PatientID and ds.PatientName == src.PatientName
        assert ds.SeriesInstanceUID != case.current.series_instance_uid
    assert seg.dataset.SeriesDescription == "NoduleTrack SEG"
    assert sr.dataset.SeriesDescription == "NoduleTrack SR"
    assert {k.dataset.SeriesDescription for k in keys} == {"NoduleTrack key images"}
    assert len({k.dataset.SeriesInstanceUID for k in keys}) == 1


def test_fleischner_sr_passes_dciodvfy_and_carries_the_recommendation(tmp_path: Path, dciodvfy) -> None:
    case, seg, sr, _ = _build(1, screening=False)
    assert case.recommendation.guideline == "fleischner2017"
    sr.dataset.save_as(tmp_path / "sr.dcm")
    _check_valid(dciodvfy, tmp_path / "sr.dcm", "Comprehensive3DSR")
    text = subprocess.run(["dsrdump", "+Pl", "+Pc", "+Pt", str(tmp_path / "sr.dcm")], capture_output=True, text=True, encoding="utf-8", errors="replace", check=True).stdout
    assert "Fleischner 2017 recommendation" in text
    assert "Lung-RADS category" not in text  # a Fleischner study has no Lung-RADS category


@pytest.mark.parametrize("seed", SEEDS)
def test_seg_round_trips(seed: int, tmp_path: Path) -> None:
    case, seg, _, _ = _build(seed)
    seg.dataset.save_as(tmp_path / "seg.dcm")
    back = hd.seg.segread(tmp_path / "seg.dcm")
    present = [n for n in case.nodules if n.current is not None]
    predicted = [n for n in present if n.forecast is not None and n.forecast.mask is not None]
    assert back.number_of_segments == len(present) + len(predicted)
    assert back.SegmentationType == "BINARY"
    by_uid = {back.get_segment_description(k).tracking_uid: k for k in back.segment_numbers}
    # The SEG references exactly the source slices that hold a segment (and only those).
    all_uids = list(case.current.sop_instance_uids)
    zs = sorted(all_uids.index(uid) for _, _, uid in back.get_source_image_uids())
    source_uids = [all_uids[z] for z in zs]
    others = np.setdiff1d(np.arange(len(all_uids)), zs)
    for n in present:
        k = by_uid[n.tracking_uid]
        desc = back.get_segment_description(k)
        assert desc.tracking_id == n.tracking_id
        assert desc.segmented_property_type == codes.NODULE
        assert desc.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        assert desc.algorithm_identification[0].AlgorithmName == "NoduleTrack"
        # The voxels round-trip exactly: count per source slice.
        m = n.current
        assert m is not None
        full = m.full_mask(case.current.hu.shape)
        pix = back.get_pixels_by_source_instance(source_sop_instance_uids=source_uids, segment_numbers=[k],
                                                 ignore_spatial_locations=True)
        assert np.array_equal(pix[..., 0].astype(bool), full[zs]) and not full[others].any()
    for n in predicted:
        info = seg.segment_for(n.tracking_uid, predicted=True)
        desc = back.get_segment_description(info.segment_number)
        assert desc.tracking_uid == info.tracking_uid != n.tracking_uid
        assert "AI prediction" in desc.SegmentDescription and "Predicted extent at" in desc.SegmentDescription
        assert "MT-NoGNet" in desc.SegmentDescription and "(AI)" in desc.segment_label
    # Only frames with content: no empty frame is stored.
    frames = back.pixel_array.reshape(back.NumberOfFrames, -1)
    assert frames.any(axis=1).all()
    assert len(back.SegmentSequence) == back.number_of_segments


@pytest.mark.parametrize("seed", SEEDS)
def test_sr_round_trips(seed: int, tmp_path: Path) -> None:
    case, seg, sr, _ = _build(seed)
    sr.dataset.save_as(tmp_path / "sr.dcm")
    back = hd.sr.srread(tmp_path / "sr.dcm")
    assert any(i.CodingSchemeDesignator == codes.PRIVATE_DESIGNATOR for i in back.CodingSchemeIdentificationSequence)
    present = [n for n in case.nodules if n.current is not None]
    (measurements,) = [i for i in back.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"]
    groups = measurements.ContentSequence  # the Imaging Measurements container
    # Per nodule: planar group first, then the volumetric group, same tracking UID.
    uid_order = []
    for g in groups:
        uid = next((i.UID for i in g.ContentSequence if i.ValueType == "UIDREF" and i.ConceptNameCodeSequence[0].CodeValue == "112040"), None)
        kind = "planar" if any(i.ValueType == "SCOORD" for i in g.ContentSequence) else (
            "volumetric" if any(i.ValueType == "IMAGE" and i.ConceptNameCodeSequence[0].CodeValue == "121191" for i in g.ContentSequence) else "other")
        uid_order.append((uid, kind))
    expected = [x for n in present for x in ((n.tracking_uid, "planar"), (n.tracking_uid, "volumetric"))]
    assert uid_order == expected  # the study recommendation is not a measurement group (OHIF)

    per_nodule = {r.tracking_uid: r for r in case.recommendation.nodules}
    for n in present:
        m = n.current
        assert m is not None
        (vol,) = back.content.get_volumetric_roi_measurement_groups(tracking_uid=n.tracking_uid)
        values = {x.name.meaning: x.value for x in vol.get_measurements()}
        assert values["Volume"] == pytest.approx(m.volume_mm3, rel=1e-4)
        assert values["Diameter"] == pytest.approx(m.mean_diameter_mm, abs=1e-3)
        assert values["Attenuation Coefficient"] == pytest.approx(m.mean_hu, abs=1e-3)
        if n.vdt_days is not None:
            assert values["Volume doubling time"] == pytest.approx(n.vdt_days, abs=1e-3)
        else:
            assert "Volume doubling time" not in values
        if n.prior is not None:
            assert values["Volume at prior time point"] == pytest.approx(n.prior.volume_mm3, rel=1e-4)
            assert values["Volume change since prior"] == pytest.approx(n.volume_change_pct, abs=1e-3)
        assert n.forecast is not None
        assert values["Predicted volume at forecast date"] == pytest.approx(n.forecast.volume_mm3, rel=1e-4)
        assert values["Predicted mean diameter at forecast date"] == pytest.approx(n.forecast.mean_diameter_mm, abs=1e-3)
        qual = {q.name.meaning: q.value for q in vol.get_qualitative_evaluations()}
        assert qual["Nodule consistency"] == codes.CONSISTENCY_VALUES[m.consistency]
        assert qual["Lung-RADS category"] == codes.lung_rads_value(per_nodule[n.tracking_uid].category)
        # The referenced segment is this nodule's segment in the SEG.
        assert vol.referenced_segment.referenced_segment_numbers == [seg.segment_for(n.tracking_uid).segment_number]
        assert vol.referenced_segment.referenced_sop_instance_uid == seg.dataset.SOPInstanceUID
        # The planar group's long axis: a 2-point POLYLINE on the source slice where it is longest.
        (planar,) = back.content.get_planar_roi_measurement_groups(tracking_uid=n.tracking_uid)
        roi = planar.roi
        assert roi.GraphicType == "POLYLINE" and len(roi.GraphicData) == 4
        ref = roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        assert ref == case.current.sop_instance_uids[m.long_axis_slice]
        length = {x.name.meaning: x.value for x in planar.get_measurements()}["Long axis"]
        assert length == pytest.approx(m.long_axis_mm, abs=1e-3)
    # Study level: follow-up interval (DCM 111055, months), due date, category and rationale.
    rec = case.recommendation
    dump = subprocess.run(["dsrdump", "+Pl", "+Pc", "+Pt", str(tmp_path / "sr.dcm")], capture_output=True, text=True, encoding="utf-8", errors="replace", check=True).stdout
    if rec.followup_months_min is not None:
        assert "Recommended Follow-up Interval" in dump
    if rec.due_date is not None:
        assert rec.due_date.strftime("%Y%m%d") in dump
    assert codes.lung_rads_value(rec.category).value in dump
    assert "Qualitative Evaluations" in dump and "Guideline applied" in dump
    (evaluations,) = [i for i in back.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    texts = [i.TextValue for i in evaluations.ContentSequence if i.ValueType == "TEXT"]
    assert guideline_name(rec.guideline) in texts and " ".join(rec.text.split()) in texts


def test_without_growth_model_or_recommendation(tmp_path: Path, dciodvfy) -> None:
    """No forecast (no growth model) and no guideline result: still valid objects, nothing invented."""
    case = phantom_case(1)
    bare = [dataclasses.replace(n, forecast=None) for n in case.nodules]
    seg = build_seg(case.current, bare, model_version="none")
    sr = build_sr(case.current, bare, seg, None, model_version="none")
    keys = build_key_images(None, case.current, bare, model_version="none")
    assert not any(s.predicted for s in seg.segments)
    for name, ds, iod in (("seg", seg.dataset, "Segmentation"), ("sr", sr.dataset, "Comprehensive3DSR"),
                          ("key", keys[0].dataset, "SCImage")):
        ds.save_as(tmp_path / f"{name}.dcm")
        _check_valid(dciodvfy, tmp_path / f"{name}.dcm", iod)
    dump = subprocess.run(["dsrdump", "+Pl", str(tmp_path / "sr.dcm")], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", check=True).stdout
    assert "Predicted" not in dump and "Recommended Follow-up" not in dump and "Lung-RADS" not in dump


def test_resolved_nodule_is_listed_in_the_sr(tmp_path: Path, dciodvfy) -> None:
    case, _, sr, _ = _build(3)  # phantom 3: nodule 1 is gone on the follow-up
    resolved = [n for n in case.nodules if n.current is None]
    assert resolved
    sr.dataset.save_as(tmp_path / "sr.dcm")
    dump = subprocess.run(["dsrdump", "+Pl", str(tmp_path / "sr.dcm")], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", check=True).stdout
    for n in resolved:
        assert f"{n.tracking_id} (tracking UID {n.tracking_uid}): resolved" in dump


def test_dsrdump_renders_tid1500(tmp_path: Path) -> None:
    _, _, sr, _ = _build(2)
    path = tmp_path / "sr.dcm"
    sr.dataset.save_as(path)
    proc = subprocess.run(["dsrdump", "+Pl", "+Pc", "+Pt", str(path)], capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("Comprehensive 3D SR Document", "TID 1500", "TID 1410", "TID 1411", "Imaging Measurement Report", "Measurement Group",
                 "Tracking Unique Identifier", "Referenced Segment", "POLYLINE", "Volume doubling time",
                 "Predicted volume at forecast date", "Recommended Follow-up Interval", "Lung-RADS category",
                 "Finding summary", "Guideline applied", "MT-NoGNet"):
        assert text in out, text
    html = subprocess.run(["dsr2html", str(path)], capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert html.returncode == 0 and "Imaging Measurement Report" in html.stdout


def test_key_images_are_labelled_secondary_captures(tmp_path: Path) -> None:
    case, _, _, keys = _build(2)
    for k in keys:
        ds = k.dataset
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.BurnedInAnnotation == "YES"
        assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
        rgb = ds.pixel_array
        assert rgb.shape == (ds.Rows, ds.Columns, 3) and rgb.shape[1] > 1000
        # The red "AI OUTPUT — NOT FOR DIAGNOSIS" banner is burned into the top rows.
        top = rgb[: rgb.shape[0] // 10].reshape(-1, 3).astype(int)
        assert ((top[:, 0] > 200) & (top[:, 1] < 100) & (top[:, 2] < 100)).sum() > 200
        # Every panel has content: no blank quarter.
        quarters = np.array_split(rgb[rgb.shape[0] // 8 :], 4, axis=1)
        assert all(q.std() > 10 for q in quarters)
        nodule = next(n for n in case.nodules if n.tracking_uid == k.tracking_uid)
        assert nodule.tracking_id in ds.ImageComments
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == case.current.sop_instance_uids[nodule.current.long_axis_slice]


def test_uids_are_deterministic_and_a_changed_result_references_its_predecessor(tmp_path: Path, dciodvfy) -> None:
    case, seg1, sr1, keys1 = _build(1)
    _build.cache_clear()  # really build twice
    _, seg2, sr2, keys2 = _build(1)
    assert (seg1.uids, sr1.uids) == (seg2.uids, sr2.uids)
    assert [k.uids for k in keys1] == [k.uids for k in keys2]
    # Same inputs with another model version: a different result.
    seg_other = build_seg(case.current, case.nodules, model_version="test-2")
    assert seg_other.uids.sop_instance_uid != seg1.uids.sop_instance_uid

    # A changed measurement → new UIDs, and the new objects reference the old ones.
    changed = [dataclasses.replace(n) for n in case.nodules]
    first = next(i for i, n in enumerate(changed) if n.current is not None)
    changed[first] = dataclasses.replace(changed[first], current=dataclasses.replace(changed[first].current, volume_mm3=changed[first].current.volume_mm3 * 1.1))
    pred_seg = Predecessor(seg1.dataset.StudyInstanceUID, seg1.dataset.SeriesInstanceUID, seg1.dataset.SOPInstanceUID, seg1.dataset.SOPClassUID)
    pred_sr = Predecessor(sr1.dataset.StudyInstanceUID, sr1.dataset.SeriesInstanceUID, sr1.dataset.SOPInstanceUID, sr1.dataset.SOPClassUID)
    seg3 = build_seg(case.current, changed, model_version=MODEL, predecessor=pred_seg)
    sr3 = build_sr(case.current, changed, seg3, case.recommendation, model_version=MODEL, predecessor=pred_sr)
    keys3 = build_key_images(case.prior, case.current, changed, model_version=MODEL,
                             predecessors={k.tracking_uid: Predecessor(k.dataset.StudyInstanceUID, k.dataset.SeriesInstanceUID,
                                                                       k.dataset.SOPInstanceUID, k.dataset.SOPClassUID) for k in keys1})
    assert seg3.uids.sop_instance_uid != seg1.uids.sop_instance_uid
    assert sr3.uids.sop_instance_uid != sr1.uids.sop_instance_uid
    pre = sr3.dataset.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert pre.ReferencedSOPInstanceUID == sr1.dataset.SOPInstanceUID
    ref = [r for r in seg3.dataset.ReferencedImageSequence if r.ReferencedSOPInstanceUID == seg1.dataset.SOPInstanceUID]
    assert ref and ref[0].PurposeOfReferenceCodeSequence[0].CodeValue == codes.REPLACED_INSTANCE.value
    assert keys3[0].dataset.ReferencedImageSequence[-1].ReferencedSOPInstanceUID == keys1[0].dataset.SOPInstanceUID
    # Objects that reference a predecessor still validate.
    for name, ds, iod in (("seg3", seg3.dataset, "Segmentation"), ("sr3", sr3.dataset, "Comprehensive3DSR"),
                          ("key3", keys3[0].dataset, "SCImage")):
        ds.save_as(tmp_path / f"{name}.dcm")
        _check_valid(dciodvfy, tmp_path / f"{name}.dcm", iod)
    assert pydicom.dcmread(tmp_path / "sr3.dcm").SOPInstanceUID == sr3.uids.sop_instance_uid
    # An unchanged result passed its own earlier instance as "predecessor": same UIDs, no self-reference
    # (so a caller may always pass what the previous run wrote).
    seg4 = build_seg(case.current, case.nodules, model_version=MODEL, predecessor=pred_seg)
    sr4 = build_sr(case.current, case.nodules, seg4, case.recommendation, model_version=MODEL,
                   prior_study_date=case.prior.study_date, predecessor=pred_sr)
    assert seg4.uids == seg1.uids and sr4.uids == sr1.uids
    assert "ReferencedImageSequence" not in seg4.dataset and "PredecessorDocumentsSequence" not in sr4.dataset


def test_content_digest_is_canonical() -> None:
    a = {"x": np.arange(6, dtype=np.int16).reshape(2, 3), "y": 1.0000000001, "z": [1, "a"]}
    b = {"z": [1, "a"], "y": 1.0, "x": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))}
    assert content_digest(a) == content_digest(b)
    assert content_digest(a) != content_digest({**a, "y": 1.01})
    assert content_digest(np.zeros(3, bool)) != content_digest(np.zeros(4, bool))
    with pytest.raises(TypeError, match="cannot hash"):
        content_digest(object())
    u1 = object_uids("1.2.3", "seg", "abc", "v1")
    assert u1 == object_uids("1.2.3", "seg", "abc", "v1")
    assert u1.sop_instance_uid != u1.series_instance_uid
    assert object_uids("1.2.3", "sr", "abc", "v1").sop_instance_uid != u1.sop_instance_uid
    with pytest.raises(ValueError, match="kind"):
        object_uids("1.2.3", "pdf", "abc", "v1")
    with pytest.raises(ValueError, match="UID"):
        object_uids("not-a-uid", "seg", "abc", "v1")


def test_bad_inputs_fail_with_clear_messages() -> None:
    case = phantom_case(1)
    with pytest.raises(ValueError, match="nothing to segment"):
        build_seg(case.current, [], model_version=MODEL)
    bare = dataclasses.replace(case.current, slice_datasets=[])
    with pytest.raises(ValueError, match="slice_datasets is empty"):
        build_seg(bare, case.nodules, model_version=MODEL)
    n = next(n for n in case.nodules if n.current is not None)
    off = dataclasses.replace(n, current=dataclasses.replace(n.current, mask_offset=(case.current.hu.shape[0], 0, 0)))
    with pytest.raises(ValueError, match="leaves the volume"):
        build_seg(case.current, [off], model_version=MODEL)
    dup = [n, dataclasses.replace(n, tracking_id="copy")]
    with pytest.raises(ValueError, match="unique"):
        build_seg(case.current, dup, model_version=MODEL)
    seg = build_seg(case.current, [n], model_version=MODEL)
    wrong_slice = dataclasses.replace(n, current=dataclasses.replace(n.current, long_axis_slice=(n.current.long_axis_slice + 3) % case.current.hu.shape[0]))
    with pytest.raises(ValueError, match="long-axis end points"):
        build_sr(case.current, [wrong_slice], seg, None, model_version=MODEL)
    with pytest.raises(ValueError, match="outside the series"):
        build_key_images(case.prior, case.current, [dataclasses.replace(n, current=dataclasses.replace(n.current, long_axis_slice=10_000))],
                         model_version=MODEL)
    with pytest.raises(ValueError, match="another study"):
        build_sr(case.current, [n], seg, None, model_version=MODEL,
                 predecessor=Predecessor("1.2.3", "1.2.3.4", "1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.88.34"))
    with pytest.raises(ValueError, match="Lung-RADS"):
        codes.lung_rads_value("5")


def test_predicted_extent_past_the_scanned_volume_is_clipped(tmp_path: Path, dciodvfy) -> None:
    """A forecast that grows past the edge of the coverage keeps the part inside the volume."""
    case = phantom_case(1)
    n = next(n for n in case.nodules if n.current is not None and n.forecast is not None)
    f = n.forecast
    nz = case.current.hu.shape[0]
    # Shift the predicted box so that it starts two slices below the first slice.
    shifted = dataclasses.replace(n, forecast=dataclasses.replace(f, mask_offset=(-2, *f.mask_offset[1:])))
    seg = build_seg(case.current, [shifted], model_version=MODEL)
    back_path = tmp_path / "seg.dcm"
    seg.dataset.save_as(back_path)
    _check_valid(dciodvfy, back_path, "Segmentation")
    back = hd.seg.segread(back_path)
    k = seg.segment_for(n.tracking_uid, predicted=True).segment_number
    uids = [uid for _, _, uid in back.get_source_image_uids()]
    pix = back.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[k],
                                             ignore_spatial_locations=True)[..., 0]
    assert pix.sum() == f.mask[2:].sum()
    # Entirely outside: no predicted segment, the measured one stays.
    gone = dataclasses.replace(n, forecast=dataclasses.replace(f, mask_offset=(nz + 5, *f.mask_offset[1:])))
    seg2 = build_seg(case.current, [gone], model_version=MODEL)
    assert [s.predicted for s in seg2.segments] == [False]


def test_our_seg_and_sr_seed_the_next_analysis(tmp_path: Path) -> None:
    """A prior's SEG and SR (ours or a radiologist's) give seeds at each nodule with its tracking UID,
    read from a directory that also holds the study's CT slices (which are skipped)."""
    from inference.seeds import PREDICTED_EXTENT_CODE, seeds_from_annotations

    assert PREDICTED_EXTENT_CODE == (codes.PREDICTED_EXTENT.value, codes.PREDICTED_EXTENT.scheme_designator)
    case, seg, sr, _ = _build(2)
    assert any(s.predicted for s in seg.segments)  # the SEG holds predicted extents to be skipped
    files = write_ct(case.current, case.variant, tmp_path / "ct")
    seg.dataset.save_as(tmp_path / "seg.dcm")
    sr.dataset.save_as(tmp_path / "sr.dcm")
    present = [n for n in case.nodules if n.current is not None]
    for name in ("seg.dcm", "sr.dcm"):
        seeds = seeds_from_annotations([*files, tmp_path / name])
        assert len(seeds) == len(present), (name, seeds)
        for n in present:
            near = [s for s in seeds if s.tracking_uid == n.tracking_uid]
            assert len(near) == 1, (name, n.tracking_uid, seeds)
            # SEG: the mask's centroid; SR: the middle of the long axis, on the slice where it was
            # measured (which need not hold the centroid): inside the nodule either way
            d = float(np.linalg.norm(np.asarray(near[0].center_mm) - np.asarray(n.current.center_mm)))
            tol = 2.0 if name == "seg.dcm" else 0.5 * n.current.long_axis_mm + case.current.geometry.spacing[2]
            assert d < tol, (name, n.tracking_id, d, tol)


def test_sr_coordinates_map_through_the_loaded_slices_headers(tmp_path: Path) -> None:
    """The pipeline passes the prior's slice headers instead of its files; without either, an SR's
    image coordinates cannot be placed and give no seed."""
    from inference.seeds import seeds_from_annotations

    case, _, sr, _ = _build(2)
    sr.dataset.save_as(tmp_path / "sr.dcm")
    with_headers = seeds_from_annotations([tmp_path / "sr.dcm"], reference_slices=case.current.slice_datasets)
    assert len(with_headers) == sum(1 for n in case.nodules if n.current is not None)
    assert seeds_from_annotations([tmp_path / "sr.dcm"]) == []
