"""Phantom generator: determinism, DICOM validity, truth consistency, growth laws, repositioning, patches.

Small matrices and few slices wherever the property does not depend on resolution; the volume
check runs at the clinical 512² matrix with the coarsest clinical slice spacing (~2.5 mm), the
hardest case for a voxel mask.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_node.cli import main as cli_main
from inference.phantoms import (
    CONSISTENCIES,
    MARGINS,
    PATTERNS,
    generate_patch_pairs,
    generate_patient,
    write_patient,
)
from tests.peers import dciodvfy


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small_patient(tmp_path_factory: pytest.TempPathFactory):
    """Seed 11, three time points at 128² × 40 slices, written to disk."""
    patient = generate_patient(11, 3, rows=128, slices=40)
    root = write_patient(patient, tmp_path_factory.mktemp("phantom"))
    return patient, root


def test_same_seed_writes_identical_files(small_patient, tmp_path: Path) -> None:
    _, root = small_patient
    again = write_patient(generate_patient(11, 3, rows=128, slices=40), tmp_path / "again")
    assert _digest(root) == _digest(again)
    other = write_patient(generate_patient(12, 3, rows=128, slices=40), tmp_path / "other")
    assert _digest(root) != _digest(other)


def test_every_slice_passes_dciodvfy(small_patient) -> None:
    _, root = small_patient
    files = sorted(root.glob("T*/*.dcm"))
    assert len(files) == 3 * 40
    for f in files:
        result = dciodvfy(f)
        assert result.ok, f"{f}: {result.errors}"
        assert result.iod == "CTImage"


def test_headers_are_consistent_and_pixels_round_trip(small_patient) -> None:
    patient, root = small_patient
    truth = json.loads((root / "truth.json").read_text())
    assert truth["patient_id"] == patient.patient_id == root.name
    birth = sex = name = None
    dates = []
    for tp, tp_truth in zip(patient.timepoints, truth["timepoints"]):
        files = sorted((root / tp_truth["dir"]).glob("CT*.dcm"))
        assert [f.name for f in files[:2]] == ["CT000001.dcm", "CT000002.dcm"]
        datasets = [pydicom.dcmread(f) for f in files]
        first = datasets[0]
        assert first.SOPClassUID == pydicom.uid.CTImageStorage
        assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert first.Modality == "CT" and first.BodyPartExamined == "CHEST" and first.StudyDescription == "CT CHEST"
        assert first.PatientID == patient.patient_id and first.IssuerOfPatientID
        assert first.ConvolutionKernel and first.Manufacturer and float(first.KVP) > 0
        assert first.StudyInstanceUID == tp_truth["study_instance_uid"]
        assert first.SeriesInstanceUID == tp_truth["series_instance_uid"]
        assert first.FrameOfReferenceUID == tp_truth["frame_of_reference_uid"]
        assert first.AccessionNumber and first.StudyID
        # the same patient in every study
        birth = birth or first.PatientBirthDate
        sex = sex or first.PatientSex
        name = name or str(first.PatientName)
        assert (first.PatientBirthDate, first.PatientSex, str(first.PatientName)) == (birth, sex, name)
        dates.append(dt.datetime.strptime(first.StudyDate, "%Y%m%d").date())
        # geometry: axial, evenly spaced, matching the volume
        spacing = float(first.SpacingBetweenSlices)
        assert float(first.SliceThickness) == pytest.approx(spacing)
        assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        by_z = sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
        z = np.array([float(d.ImagePositionPatient[2]) for d in by_z])
        assert np.allclose(np.diff(z), spacing, atol=1e-3)
        assert z[0] == pytest.approx(tp.volume.geometry.origin[2], abs=1e-3)
        assert float(first.PixelSpacing[0]) == pytest.approx(tp.pixel_spacing_mm, abs=1e-5)
        # stored values + rescale give back the volume's HU exactly
        hu = np.stack([d.pixel_array.astype(np.int32) * int(d.RescaleSlope) + int(d.RescaleIntercept) for d in by_z])
        assert np.array_equal(hu, tp.volume.hu.astype(np.int32))
        assert sorted(int(d.InstanceNumber) for d in datasets) == list(range(1, len(datasets) + 1))
    assert [(d - dates[0]).days for d in dates] == [tp.days_from_baseline for tp in patient.timepoints]
    assert len({t["frame_of_reference_uid"] for t in truth["timepoints"]}) == len(dates)
    assert len({t["study_instance_uid"] for t in truth["timepoints"]}) == len(dates)


def test_fast_writer_matches_pydicom_byte_for_byte(small_patient, tmp_path: Path) -> None:
    from inference.phantoms.dicom import write_slices, write_slices_pydicom

    patient, _ = small_patient
    for tp in patient.timepoints:
        variant = tp.study["pixel_variant"]
        fast = write_slices(tp.volume.slice_datasets, tp.volume.hu, variant, tmp_path / f"fast{tp.index}")
        slow = write_slices_pydicom(tp.volume.slice_datasets, tp.volume.hu, variant, tmp_path / f"slow{tp.index}")
        assert [p.name for p in fast] == [p.name for p in slow]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(fast, slow))


def _label_centroid_mm(tp, k: int) -> np.ndarray:
    zyx = np.argwhere(tp.labels == k).mean(axis=0)
    return tp.volume.geometry.index_to_lps(zyx)


@pytest.mark.parametrize("seeds", [(0, 2, 6)])
def test_truth_volumes_match_voxelised_masks(seeds: tuple[int, ...]) -> None:
    """Within 3 % for every nodule ≥ 5 mm, across every consistency and margin, at ~2.5 mm slices."""
    seen_consistency, seen_margin = set(), set()
    checked = 0
    for seed in seeds:
        patient = generate_patient(seed, 1, rows=512, slices=120, n_nodules=(4, 4))
        tp = patient.timepoints[0]
        assert tp.slice_thickness_mm > 2.3 and 0.55 <= tp.pixel_spacing_mm <= 0.9
        voxel = tp.volume.geometry.voxel_volume_mm3
        for k, nod in enumerate(patient.nodules, start=1):
            truth = nod.timepoints[0]
            if truth["equivalent_diameter_mm"] < 5.0:
                continue
            mask_volume = float((tp.labels == k).sum()) * voxel
            assert mask_volume == pytest.approx(truth["volume_mm3"], rel=0.03), (seed, nod.id, nod.margin)
            assert truth["mask_volume_mm3"] == pytest.approx(mask_volume, abs=0.01)
            # the mask is where truth says the nodule is (centroid within a voxel diagonal)
            assert np.linalg.norm(_label_centroid_mm(tp, k) - truth["center_mm"]) < 3.0
            if truth["solid_volume_mm3"] >= math.pi / 6 * 5**3:
                solid_volume = float((tp.solid_labels == k).sum()) * voxel
                assert solid_volume == pytest.approx(truth["solid_volume_mm3"], rel=0.03)
            seen_consistency.add(nod.consistency)
            seen_margin.add(nod.margin)
            checked += 1
    assert seen_consistency == set(CONSISTENCIES) and seen_margin == set(MARGINS), (seen_consistency, seen_margin)
    assert checked >= 8


@pytest.fixture(scope="module")
def pattern_patients():
    """Small three-time-point patients until every growth pattern has occurred."""
    patients, seen = [], set()
    for seed in range(100, 160):
        p = generate_patient(seed, 3, rows=64, slices=16, n_nodules=(4, 4))
        patients.append(p)
        seen |= {n.pattern for n in p.nodules}
        if seen == set(PATTERNS):
            break
    assert seen == set(PATTERNS), seen
    return patients


def test_growth_patterns_follow_their_laws(pattern_patients) -> None:
    for p in pattern_patients:
        days = [tp.days_from_baseline for tp in p.timepoints]
        assert all(91 <= b - a <= 730 for a, b in zip(days, days[1:])), days  # 3-24 months
        for nod in p.nodules:
            tps = nod.timepoints
            vol = [t["volume_mm3"] for t in tps]
            present = [t["present"] for t in tps]
            if nod.pattern in ("growing", "gg_to_part_solid", "shrinking"):
                assert all(present) and nod.vdt_days is not None
                for t in range(1, 3):  # V(t) = V0 · 2^(t / VDT); VDT < 0 is a halving time
                    expected = vol[0] * 2.0 ** ((days[t] - days[0]) / nod.vdt_days)
                    assert vol[t] == pytest.approx(expected, rel=0.005), (nod.id, nod.pattern)
                assert (vol[2] > vol[0]) == (nod.pattern != "shrinking")
            elif nod.pattern == "stable":
                assert all(present) and max(vol) == pytest.approx(min(vol), rel=1e-6)
            elif nod.pattern == "new":
                assert not present[0] and present[-1]
                first = present.index(True)
                for t in range(first + 1, 3):
                    expected = vol[first] * 2.0 ** ((days[t] - days[first]) / nod.vdt_days)
                    assert vol[t] == pytest.approx(expected, rel=0.005)
            elif nod.pattern == "resolved":
                assert present[0] and not present[-1]
                assert present == sorted(present, reverse=True)
            if nod.pattern == "gg_to_part_solid":
                cons = [t["consistency"] for t in tps]
                assert cons[0] == "ground_glass" and cons[-1] == "part_solid"
                assert tps[0]["solid_volume_mm3"] == 0 and tps[-1]["solid_volume_mm3"] > 0
            for t in tps:
                if t["present"]:
                    assert t["long_axis_mm"] >= t["short_axis_mm"] > 0
                    assert t["mean_diameter_mm"] == pytest.approx((t["long_axis_mm"] + t["short_axis_mm"]) / 2, abs=0.01)
                    assert 0 <= t["solid_volume_mm3"] <= t["volume_mm3"] + 1e-6
                    if t["consistency"] == "solid":
                        assert t["solid_volume_mm3"] == pytest.approx(t["volume_mm3"])
                else:
                    assert t["volume_mm3"] == 0 and t["center_mm"] is None


def test_nodule_variety_across_seeds(pattern_patients) -> None:
    nods = [n for p in pattern_patients for n in p.nodules]
    assert {n.location for n in nods} == {"central", "juxtapleural", "perivascular"}
    assert {n.margin for n in nods} == set(MARGINS)
    sizes = [n.timepoints[0]["equivalent_diameter_mm"] for n in nods if n.timepoints[0]["present"]]
    assert min(sizes) < 6 and max(sizes) > 12


def test_each_study_is_repositioned(pattern_patients) -> None:
    p = pattern_patients[0]
    poses = [tp.anatomy_to_patient for tp in p.timepoints]
    for a, b in zip(poses, poses[1:]):
        rel = b @ np.linalg.inv(a)
        angle = math.degrees(math.acos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1)))
        assert 0.0 < angle <= 3.0
        assert 0.1 < np.linalg.norm(b[:3, 3] - a[:3, 3]) < 15.0
    # a stable nodule's centre moves exactly by the relative pose between studies
    for patient in pattern_patients:
        for nod in patient.nodules:
            if nod.pattern == "stable" and nod.location == "central":
                c0 = np.array(nod.timepoints[0]["center_mm"] + [1.0])
                pose0, pose1 = patient.timepoints[0].anatomy_to_patient, patient.timepoints[1].anatomy_to_patient
                c1 = (pose1 @ np.linalg.inv(pose0) @ c0)[:3]
                assert np.allclose(c1, nod.timepoints[1]["center_mm"], atol=0.01)
                assert np.linalg.norm(c1 - c0[:3]) > 0.1
                return
    pytest.fail("no stable central nodule among the pattern patients")


def test_label_masks_follow_the_truth_centres() -> None:
    """The rendered nodules sit where truth.json says, in each study's own coordinates."""
    p = generate_patient(21, 2, rows=256, slices=100, n_nodules=(3, 3))
    for tp in p.timepoints:
        for k, nod in enumerate(p.nodules, start=1):
            t = nod.timepoints[tp.index]
            if not t["present"]:
                assert not np.any(tp.labels == k)
                continue
            if t["equivalent_diameter_mm"] >= 6:
                tol = 2.0 * float(np.linalg.norm(tp.volume.geometry.spacing))
                assert np.linalg.norm(_label_centroid_mm(tp, k) - t["center_mm"]) < tol
                # the nodule is visible: its mask is denser than lung parenchyma
                assert float(tp.volume.hu[tp.labels == k].mean()) > -700


def test_patch_pairs_manifest(tmp_path: Path) -> None:
    manifest = generate_patch_pairs(tmp_path, 12, 3, patch_size=48)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(lines) == 12 and len({x["id"] for x in lines}) == 12
    assert {x["pattern"] for x in lines} == set(PATTERNS)
    assert 3 <= sum(1 for x in lines if x.get("history")) <= 11
    for x in lines:
        assert 91 <= x["interval_days"] <= 730
        roles = [("baseline_image", "baseline_mask"), ("followup_image", "followup_mask")]
        roles += [(h["image"], h["mask"]) for h in x.get("history", [])]
        shapes = set()
        for img_key, mask_key in roles:
            img_path = tmp_path / (x.get(img_key) or img_key)
            mask_path = tmp_path / (x.get(mask_key) or mask_key)
            img, mask = nib.load(img_path), nib.load(mask_path)
            assert np.allclose(img.affine, mask.affine)
            data, m = np.asarray(img.dataobj), np.asarray(mask.dataobj)
            assert data.shape == m.shape == (48, 48, 48) and data.dtype == np.int16
            assert set(np.unique(m)) <= {0, 1}
            assert -1024 <= data.min() and np.percentile(data, 10) < -700  # lung parenchyma around the nodule
            shapes.add(data.shape)
        base_mask = np.asarray(nib.load(tmp_path / x["baseline_mask"]).dataobj)
        follow_mask = np.asarray(nib.load(tmp_path / x["followup_mask"]).dataobj)
        assert base_mask.sum() > 0
        if x["pattern"] == "resolved":
            assert follow_mask.sum() == 0 and x["followup_volume_mm3"] == 0
        else:
            assert follow_mask.sum() > 0
        if x["pattern"] == "growing":
            expected = x["baseline_volume_mm3"] * 2 ** (x["interval_days"] / x["vdt_days"])
            assert x["followup_volume_mm3"] == pytest.approx(expected, rel=0.005)
        if x["pattern"] == "new":
            assert x["history"] and np.asarray(nib.load(tmp_path / x["history"][0]["mask"]).dataobj).sum() == 0
        # nodules that fit inside the patch: the mask volume matches the truth volume
        if 5 <= (6 * x["baseline_volume_mm3"] / math.pi) ** (1 / 3) <= 25:
            assert float(base_mask.sum()) == pytest.approx(x["baseline_volume_mm3"], rel=0.03)
    again = generate_patch_pairs(tmp_path / "again", 12, 3, patch_size=48)
    assert again.read_text() == manifest.read_text()
    assert (tmp_path / lines[5]["followup_image"]).read_bytes() == (tmp_path / "again" / lines[5]["followup_image"]).read_bytes()


def test_patch_pairs_with_worker_processes_match_one_process(tmp_path: Path) -> None:
    one = generate_patch_pairs(tmp_path / "one", 3, 9, patch_size=32)
    two = generate_patch_pairs(tmp_path / "two", 3, 9, patch_size=32, workers=2)
    assert one.read_text() == two.read_text()
    line = json.loads(one.read_text().splitlines()[2])
    assert (tmp_path / "one" / line["followup_image"]).read_bytes() == (tmp_path / "two" / line["followup_image"]).read_bytes()


def test_cli_writes_patients_and_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(["phantom", "--out", str(tmp_path), "--patients", "2", "--seed", "5", "--rows", "64", "--slices", "12"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "PT000005" in out and "PT000006" in out
    assert (tmp_path / "PT000006" / "truth.json").exists()
    assert len(list((tmp_path / "PT000005" / "T1").glob("*.dcm"))) == 12
    assert cli_main(["phantom", "--out", str(tmp_path), "--patients", "0"]) == 2
    assert cli_main(["phantom", "--out", str(tmp_path), "--nodules", "5-2"]) == 2
    assert "--nodules" in capsys.readouterr().err
