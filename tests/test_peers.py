"""The harness itself: peers start, listen on loopback only, and stop."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import create_engine, text

from tests import peers


def test_orthanc_listens_on_loopback_only_and_answers_echo(orthanc: peers.Orthanc) -> None:
    for port in (orthanc.dicom_port, orthanc.http_port):
        addresses = peers.listening_addresses(port)
        assert addresses, f"nothing listening on {port}"
        assert all(a.startswith("127.0.0.1:") or a.startswith("[::1]:") for a in addresses), addresses
    assert orthanc.get("/system")["DicomAet"] == "ORTHANC"
    echo = subprocess.run(
        ["echoscu", "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port)],
        env=peers.loopback_env(), capture_output=True, text=True, timeout=30,
    )
    assert echo.returncode == 0, echo.stderr


def test_postgres_server_answers(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("select 1 + 1")).scalar_one() == 2
        assert "PostgreSQL" in conn.execute(text("select version()")).scalar_one()
    engine.dispose()


def _minimal_ct(path: Path) -> Path:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dciodvfy_reports_errors_for_an_incomplete_ct(tmp_path: Path, dciodvfy) -> None:
    result = dciodvfy(_minimal_ct(tmp_path / "bad.dcm"))
    assert not result.ok and result.errors  # a CT with no patient/study/image modules must fail
    assert pydicom.dcmread(tmp_path / "bad.dcm").SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
