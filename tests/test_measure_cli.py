"""``noduletrack analyze``: unusable input exits 2 with the reason; a phantom pair gives a summary.json
that follows the DESIGN.md contract (run as a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_measure_series import write_series


def _analyze(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicom_node.cli", "analyze", *args, "--no-progress"],
                          capture_output=True, text=True, timeout=timeout)


def test_gapped_series_exits_2_with_reason(tmp_path: Path) -> None:
    hu = np.full((20, 32, 32), -800, np.int16)
    write_series(tmp_path / "cur", hu, positions=[k * 1.0 for k in range(10)] + [k + 4.0 for k in range(10, 20)])
    r = _analyze("--current", str(tmp_path / "cur"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    assert "current study cannot be analysed" in r.stderr and "gap" in r.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_analyze_ends_without_interpreter_teardown_and_other_commands_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``analyze`` (one-shot, torch loaded) exits through ``os._exit`` with its own code after
    flushing; a command that does not ask for it exits normally."""
    import os

    from dicom_node import cli

    hard_exits: list[int] = []

    def fake_exit(code: int) -> None:
        hard_exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(sys, "argv", ["noduletrack", "analyze", "--current", str(tmp_path / "nope"),
                                      "--out", str(tmp_path / "out"), "--no-progress"])
    with pytest.raises(SystemExit) as stop:
        cli.entry()
    assert hard_exits == [2] and stop.value.code == 2
    monkeypatch.setattr(sys, "argv", ["noduletrack", "guideline", "--help"])
    with pytest.raises(SystemExit) as stop:
        cli.entry()
    assert hard_exits == [2] and stop.value.code == 0


def test_missing_directory_and_not_a_chest_exit_2(tmp_path: Path) -> None:
    r = _analyze("--current", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "no such directory" in r.stderr
    # a valid CT series of a water cylinder: no lungs → exit 2 with the reason
    z, y, x = np.mgrid[:24, :48, :48]
    hu = np.where((y - 24) ** 2 + (x - 24) ** 2 < 20 ** 2, 0, -1000).astype(np.int16)
    write_series(tmp_path / "water", hu, spacing=(4.0, 4.0, 5.0))
    r = _analyze("--current", str(tmp_path / "water"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "lung" in r.stderr
    # the error names the study that failed (the prior here)
    r = _analyze("--prior", str(tmp_path / "nope"), "--current", str(tmp_path / "water"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "prior study cannot be analysed" in r.stderr and "no such directory" in r.stderr


@pytest.mark.slow
def test_phantom_pair_summary_contract(tmp_path: Path) -> None:
    from inference.phantoms import generate_patient, write_patient

    patient = generate_patient(1001, timepoints=2, rows=192)
    root = write_patient(patient, tmp_path / "ph")
    r = _analyze("--prior", str(root / "T0"), "--current", str(root / "T1"), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    # the process ends without module teardown (cli.entry): what it printed and logged still arrives
    assert "summary written to" in r.stdout
    assert "analyzed" in r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["outputs"] and "summary.json" in summary["outputs"]
    assert summary["study_instance_uid"] == patient.timepoints[1].volume.study_instance_uid
    for n in summary["nodules"]:
        for key in ("tracking_uid", "center_mm", "volume_mm3", "prior_volume_mm3", "mean_diameter_mm",
                    "consistency", "vdt_days", "predicted"):
            assert key in n
        assert n["consistency"] in ("solid", "part_solid", "ground_glass")
        assert n["tracking_uid"].replace(".", "").isdigit()
    rec = summary["recommendation"]
    if rec is not None:
        for key in ("guideline", "category", "followup_months_min", "followup_months_max", "due_date", "text"):
            assert key in rec
    # deterministic: the same input gives the same tracking UIDs
    r2 = _analyze("--prior", str(root / "T0"), "--current", str(root / "T1"), "--out", str(tmp_path / "out2"))
    assert r2.returncode == 0
    again = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert [n["tracking_uid"] for n in again["nodules"]] == [n["tracking_uid"] for n in summary["nodules"]]


def test_sr_in_the_prior_directory_seeds_the_analysis(tmp_path: Path) -> None:
    """An SR that arrived with the prior (ours or a radiologist's, image coordinates on its slices)
    is found among the prior directory's files and its tracking UIDs carry over to the nodules
    measured there; the SR's image references resolve through the headers the series selection
    already read."""
    from tests.reports_fixtures import write_ct
    from tests.test_reports_dicom import _build

    case, _, sr, _ = _build(2)
    write_ct(case.current, case.variant, tmp_path / "prior")
    sr.dataset.save_as(tmp_path / "prior" / "sr.dcm")
    write_ct(case.current, case.variant, tmp_path / "current")
    r = _analyze("--prior", str(tmp_path / "prior"), "--current", str(tmp_path / "current"),
                 "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    reported = summary["nodules"]
    annotated = [n for n in case.nodules if n.current is not None]
    assert {n.tracking_uid for n in annotated} & {r["tracking_uid"] for r in reported}, "no SR identity carried over"
    # every annotated nodule that was measured keeps the annotation's identity (the 5 mm slices of
    # this small phantom leave some too thin to segment; those are not reported at all)
    for n in annotated:
        near = [r for r in reported
                if np.linalg.norm(np.subtract(r["center_mm"], n.current.center_mm)) < max(3.0, 0.5 * n.current.long_axis_mm)]
        assert all(r["tracking_uid"] == n.tracking_uid for r in near), (n.tracking_id, near)
        # and one that was not measured is named in the notes, not silently dropped
        if n.tracking_uid not in {r["tracking_uid"] for r in reported}:
            assert any(f"annotated nodule {n.tracking_id} " in note for note in summary["notes"]), summary["notes"]
