"""Phantom generator: determinism, DICOM validity, truth consistency, growth laws, patches."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from inference.phantoms import generate_patient, write_patient
from tests.peers import dciodvfy


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_writes_identical_files_and_valid_dicom(tmp_path: Path) -> None:
    a = write_patient(generate_patient(11, 2, rows=128, slices=40), tmp_path / "a")
    b = write_patient(generate_patient(11, 2, rows=128, slices=40), tmp_path / "b")
    assert _digest(a) == _digest(b)
    c = write_patient(generate_patient(12, 2, rows=128, slices=40), tmp_path / "c")
    assert _digest(a) != _digest(c)
    files = sorted((a / "T0").glob("*.dcm")) + sorted((a / "T1").glob("*.dcm"))
    assert len(files) == 80
    for f in files:
        result = dciodvfy(f)
        assert result.ok, f"{f}: {result.errors}"
