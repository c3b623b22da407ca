"""The SR for a study in which no nodule was found: the radiologist must still get a report.

No SEG is written (a SEG with zero segments is not a valid object) and no key image; the TID 1500 SR
says that the search ran and found nothing, names the algorithm, and carries the guideline engine's
result for that case (Lung-RADS 1 when screening, Fleischner "no nodule follow-up" otherwise).
Validated with dciodvfy, parsed with dcmtk's dsrdump, read back with highdicom.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from pathlib import Path

import highdicom as hd
import pytest

from inference.phantoms import generate_patient
from inference.types import CTVolume
from reports import codes
from reports.guidelines.recommend import StudyContext, recommend
from reports.seg import SOFTWARE_NAME, software_version
from reports.sr import build_sr, guideline_name
from reports.uids import Predecessor
from tests.reports_fixtures import phantom_case

_EXPECTED_WARNING = "Unrecognized defined term <99NDLTRK>"  # our declared private scheme (see test_reports_dicom)


@functools.lru_cache(maxsize=1)
def _empty_chest() -> CTVolume:
    """A phantom chest CT with no nodule at all."""
    return generate_patient(5, timepoints=1, rows=96, slices=40, n_nodules=(0, 0)).timepoints[0].volume


def _recommendation(volume: CTVolume, screening: bool):
    assert volume.study_date is not None
    return recommend([], StudyContext(study_date=volume.study_date, screening=screening))


def _dump(path: Path) -> str:
    proc = subprocess.run(["dsrdump", "+Pl", "+Pc", "+Pt", str(path)], capture_output=True, text=True,
                          encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _valid(dciodvfy, path: Path) -> None:
    result = dciodvfy(path)
    assert result.ok, "\n".join(result.errors)
    assert result.iod == "Comprehensive3DSR", result.output[:500]
    unexpected = [w for w in result.warnings if _EXPECTED_WARNING not in w]
    assert not unexpected, "\n".join(unexpected)


def _items(container) -> list:
    return list(container.ContentSequence)


def _by_concept(items, code: str) -> list:
    return [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == code]


def test_screening_study_without_nodules_gets_lung_rads_1(tmp_path: Path, dciodvfy) -> None:
    volume = _empty_chest()
    rec = _recommendation(volume, screening=True)
    assert (rec.guideline, rec.category) == ("lungrads2022", "1")  # from the guideline engine, not from us
    sr = build_sr(volume, [], None, rec, model_version="no-nodules")
    path = tmp_path / "sr.dcm"
    sr.dataset.save_as(path)
    _valid(dciodvfy, path)

    dump = _dump(path)
    for text in ("TID 1500", "Imaging Measurement Report", "Measurement Group", "Tracking Unique Identifier",
                 "All algorithms succeeded; without findings", "Absent", "Algorithm Name", "Algorithm Version",
                 "Lung-RADS category", codes.lung_rads_value("1").value, "Recommended Follow-up Interval"):
        assert text in dump, text
    assert "MT-NoGNet" not in dump  # the growth model did not run: not named

    back = hd.sr.srread(path)
    assert back.StudyInstanceUID == volume.study_instance_uid and back.SOPInstanceUID == sr.uids.sop_instance_uid
    (measurements,) = _by_concept(_items(back), "126010")
    (group,) = _items(measurements)
    content = _items(group)
    (cad,) = _by_concept(content, codes.CAD_PROCESSING_SUMMARY.value)
    assert cad.ConceptCodeSequence[0].CodeValue == codes.ALL_SUCCEEDED_WITHOUT_FINDINGS.value
    (absent,) = _by_concept(content, codes.NODULE.value)
    assert absent.ConceptCodeSequence[0].CodeValue == codes.ABSENT.value
    (name,) = _by_concept(content, "111001")
    (version,) = _by_concept(content, "111003")
    assert (name.TextValue, version.TextValue) == (SOFTWARE_NAME, software_version())

    (evaluations,) = _by_concept(_items(back), codes.QUALITATIVE_EVALUATIONS.value)
    study = _items(evaluations)
    (category,) = _by_concept(study, codes.LUNG_RADS_CATEGORY.value)
    assert category.ConceptCodeSequence[0].CodeValue == codes.lung_rads_value("1").value
    (interval,) = _by_concept(study, codes.RECOMMENDED_FOLLOWUP_INTERVAL.value)
    assert float(interval.MeasuredValueSequence[0].NumericValue) == rec.followup_months_min == 12
    (due,) = _by_concept(study, codes.RECOMMENDED_FOLLOWUP_DATE.value)
    assert due.Date == rec.due_date.strftime("%Y%m%d")
    texts = [i.TextValue for i in study if i.ValueType == "TEXT"]
    assert guideline_name(rec.guideline) in texts and " ".join(rec.text.split()) in texts

    # "Nothing found" is a statement about the whole analysed series: all of it is the evidence.
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == volume.series_instance_uid
    assert {i.ReferencedSOPInstanceUID for i in evidence.ReferencedSOPSequence} == set(volume.sop_instance_uids)


def test_incidental_study_without_nodules_gets_the_fleischner_result(tmp_path: Path, dciodvfy) -> None:
    volume = _empty_chest()
    rec = _recommendation(volume, screening=False)
    assert rec.guideline == "fleischner2017" and rec.followup_months_min is None
    sr = build_sr(volume, [], None, rec, model_version="no-nodules")
    path = tmp_path / "sr.dcm"
    sr.dataset.save_as(path)
    _valid(dciodvfy, path)
    dump = _dump(path)
    assert "Fleischner" in dump and "All algorithms succeeded; without findings" in dump
    assert "Recommended Follow-up Interval" not in dump  # the engine gives none: none is invented
    back = hd.sr.srread(path)
    (evaluations,) = _by_concept(_items(back), codes.QUALITATIVE_EVALUATIONS.value)
    texts = [i.TextValue for i in _items(evaluations) if i.ValueType == "TEXT"]
    assert " ".join(rec.text.split()) in texts


def test_nodules_that_resolved_are_listed(tmp_path: Path, dciodvfy) -> None:
    """All nodules of the prior are gone: "no nodules" on this study, and the resolved ones by UID."""
    case = phantom_case(3)
    gone = [dataclasses.replace(n, current=None, forecast=None, status="resolved") for n in case.nodules if n.prior is not None]
    assert gone
    rec = recommend([], StudyContext(study_date=case.current.study_date, screening=True))
    sr = build_sr(case.current, gone, None, rec, model_version="no-nodules", prior_study_date=case.prior.study_date)
    path = tmp_path / "sr.dcm"
    sr.dataset.save_as(path)
    _valid(dciodvfy, path)
    dump = _dump(path)
    assert "All algorithms succeeded; without findings" in dump
    for n in gone:
        assert f"{n.tracking_id} (tracking UID {n.tracking_uid}): resolved" in dump


def test_uids_are_deterministic_and_a_change_references_the_earlier_report() -> None:
    volume = _empty_chest()
    rec = _recommendation(volume, screening=True)
    first = build_sr(volume, [], None, rec, model_version="no-nodules")
    again = build_sr(volume, [], None, _recommendation(volume, screening=True), model_version="no-nodules")
    assert first.uids == again.uids
    ds = first.dataset
    other = build_sr(volume, [], None, _recommendation(volume, screening=False), model_version="no-nodules",
                     predecessor=Predecessor(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID))
    assert other.uids.sop_instance_uid != first.uids.sop_instance_uid
    ref = other.dataset.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == ds.SOPInstanceUID


def test_seg_and_nodules_must_agree() -> None:
    volume = _empty_chest()
    case = phantom_case(1)
    with pytest.raises(ValueError, match="need their SEG"):
        build_sr(case.current, case.nodules, None, None, model_version="m")
    from reports.seg import build_seg

    seg = build_seg(case.current, case.nodules, model_version="m")
    with pytest.raises(ValueError, match="no nodule has a current measurement"):
        build_sr(case.current, [], seg, None, model_version="m")
    with pytest.raises(ValueError, match="slice_datasets is empty"):
        build_sr(dataclasses.replace(volume, slice_datasets=[]), [], None, None, model_version="m")
