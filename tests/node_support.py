"""Helpers for the node tests: small synthetic CT series, node config files, a running node.

The CT series are real CT Image Storage objects (pydicom-built, valid headers, random pixels) —
enough for transport, indexing and prior matching; imaging tests use the phantom generator.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests import peers

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable


def dcmtk(tool: str) -> str:
    """Path of a dcmtk tool (not pynetdicom's same-named console scripts in .venv/bin)."""
    for candidate in (f"/usr/bin/{tool}", f"/bin/{tool}"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(tool)
    assert found, f"dcmtk {tool} not installed"
    return found


@dataclass
class Series:
    study_uid: str
    series_uid: str
    sop_uids: list[str]
    files: list[Path]
    patient_id: str


def ct_datasets(
    n: int,
    *,
    rows: int = 32,
    patient_id: str = "PAT001",
    issuer: str = "HOSP",
    sex: str = "F",
    birth_date: str = "19600101",
    study_date: dt.date = dt.date(2025, 6, 1),
    study_uid: str | None = None,
    series_uid: str | None = None,
    seed: int = 0,
    body_part: str = "CHEST",
) -> list[Dataset]:
    """``n`` axial CT slices of one series (``rows``² int16, 1.25 mm apart) with full headers."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    out = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.PatientName = "Test^Patient"
        ds.PatientID = patient_id
        ds.IssuerOfPatientID = issuer
        ds.PatientSex = sex
        ds.PatientBirthDate = birth_date
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = study_date.strftime("%Y%m%d")
        ds.SeriesDate = ds.StudyDate
        ds.StudyTime = "101010"
        ds.StudyID = "1"
        ds.AccessionNumber = f"A{seed:05d}"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CT CHEST"
        ds.SeriesDescription = "AXIAL 1.25"
        ds.Modality = "CT"
        ds.BodyPartExamined = body_part
        ds.Manufacturer = "NoduleTrack tests"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientPosition = "FFS"
        ds.ImagePositionPatient = [-100.0, -100.0, -1.25 * i]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.25
        ds.KVP = 120
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = rows
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = rng.integers(0, 2000, size=(rows, rows), dtype=np.int16).tobytes()
        out.append(ds)
    return out


def write_series(directory: Path, datasets: Sequence[Dataset]) -> Series:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i, ds in enumerate(datasets):
        path = directory / f"CT{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    first = datasets[0]
    return Series(str(first.StudyInstanceUID), str(first.SeriesInstanceUID), [str(d.SOPInstanceUID) for d in datasets],
                  files, str(first.PatientID))


def node_config(tmp: Path, port: int, db_url: str | None = None, **sections: dict[str, Any]) -> Path:
    """Write a node TOML config under ``tmp`` (spool + SQLite there unless ``db_url``)."""
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    base: dict[str, dict[str, Any]] = {
        "node": {"ae_title": "NODULETRACK", "host": "127.0.0.1", "port": port},
        "storage": {"spool": str(tmp / "spool")},
        "database": {"url": db_url or f"sqlite:///{tmp / 'node.db'}"},
        "stability": {"quiet_seconds": 2, "sweep_seconds": 0.5},
        "workers": {"processes": 0, "poll_seconds": 0.2},
        "pacs": {"host": "127.0.0.1", "port": 1, "retry_initial_seconds": 0.5, "retry_max_seconds": 2},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    text = "\n".join(f"[{name}]\n" + "\n".join(f"{k} = {fmt(v)}" for k, v in values.items()) + "\n" for name, values in base.items())
    path = tmp / "node.toml"
    path.write_text(text)
    return path


def noduletrack(*args: str, config: Path | None = None, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "-m", "dicom_node.cli", *args] + (["--config", str(config)] if config else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


class Node:
    """``noduletrack serve`` as a subprocess (so that it can be killed with SIGKILL)."""

    def __init__(self, config: Path, log: Path, *extra: str) -> None:
        self.config, self.log_path = config, log
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self, port: int, timeout: float = 60) -> "Node":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PYTHON, "-m", "dicom_node.cli", "serve", "--config", str(self.config), *self.extra],
                                     stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
        peers.wait_for_port(port, timeout, self.proc)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        if self.proc is None:
            return 0
        peers.terminate(self.proc, timeout=30)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_until(predicate: Any, timeout: float = 30, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached after {timeout} s")
