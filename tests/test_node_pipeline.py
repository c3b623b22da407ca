"""The node's side of one study: completion (when to analyse) and what the pipeline writes.

* A ``complete`` issued right after a transfer must not reopen the study at the next sweep (that
  used to re-analyse every such study once more, ``quiet_seconds`` later); an instance that really
  arrives afterwards still does.
* A study without nodules gets an SR (no SEG, no key images) through the pipeline's writer step,
  with the guideline chosen by the node's configuration.
"""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from dicom_node.completion import CompletionScheduler, force_complete, next_due, sweep
from dicom_node.config import load_config
from dicom_node.db import Database, upgrade
from dicom_node.ingest import Indexer, check_instance
from dicom_node.models import Study
from dicom_node.pipeline import _recommend, _remove_stale_outputs, _write_dicom
from inference.analysis import StudyAnalysis
from inference.phantoms import generate_patient
from tests.node_support import ct_datasets, node_config

SR3D = "1.2.840.10008.5.1.4.1.1.88.34"


def _info(ds):
    return check_instance(ds, str(ds.SOPClassUID), str(ds.SOPInstanceUID), "1.2.840.10008.1.2.1")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_forced_completion_right_after_a_transfer_is_not_reopened(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    db = Database(db_url)
    config = load_config(node_config(tmp_path, 11112, db_url, stability={"quiet_seconds": 30}))
    try:
        series = ct_datasets(6, rows=8)
        indexer = Indexer(db)
        for ds in series[:5]:
            indexer.index(_info(ds), "a", 1, "1.2.840.10008.1.2.1", "")
        study_uid = str(series[0].StudyInstanceUID)
        assert force_complete(db, config, study_uid)  # well within the 2 s margin of the last instance
        for _ in range(2):
            sweep(db, config)
        with db.session() as s:
            state, reanalyse = s.execute(select(Study.state, Study.reanalyse)).one()
        assert (state, reanalyse) == ("queued", False), "the instances the completion saw reopened the study"

        time.sleep(0.01)
        assert indexer.index(_info(series[5]), "b", 1, "1.2.840.10008.1.2.1", "")  # a real late arrival
        sweep(db, config)
        with db.session() as s:
            state, reanalyse = s.execute(select(Study.state, Study.reanalyse)).one()
        assert (state, reanalyse) == ("receiving", True)
    finally:
        db.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_completion_lands_when_the_study_becomes_quiet_not_at_the_next_regular_sweep(db_url: str, tmp_path: Path) -> None:
    """quiet 1 s, regular sweeps every 60 s: the booked sweep completes the study ~1 s after its last instance."""
    upgrade(db_url)
    db = Database(db_url)
    config = load_config(node_config(tmp_path, 11112, db_url, stability={"quiet_seconds": 1, "sweep_seconds": 60}))
    scheduler = CompletionScheduler(db, config)
    try:
        series = ct_datasets(3, rows=8)
        indexer = Indexer(db)
        for ds in series:
            indexer.index(_info(ds), "a", 1, "1.2.840.10008.1.2.1", "")
        scheduler.start()  # its first sweep sees the instances and books the due one
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with db.session() as s:
                state = s.execute(select(Study.state)).scalar_one()
            if state != "receiving":
                break
            time.sleep(0.1)
        assert state == "queued", "not completed until the next regular sweep (60 s)"
        assert next_due(db, config) is None  # nothing left receiving: nothing booked
    finally:
        scheduler.stop()
        db.dispose()


@pytest.mark.parametrize("guideline, category", [("lungrads2022", "1"), ("fleischner2017", "no nodules")])
def test_study_without_nodules_gets_an_sr_only(guideline: str, category: str, tmp_path: Path, dciodvfy) -> None:
    current = generate_patient(5, timepoints=1, rows=96, slices=40, n_nodules=(0, 0)).timepoints[0].volume
    config = load_config(node_config(tmp_path, 11112))
    analysis = StudyAnalysis(nodules=[], timings={})
    recommendation = _recommend(analysis, current, config, guideline)
    assert (recommendation.guideline, recommendation.category) == (guideline, category)

    paths, objects = _write_dicom(None, current, analysis, recommendation, "", tmp_path / "out", [])
    assert [p.name for p in paths] == ["sr.dcm"] and [o["kind"] for o in objects] == ["sr"]
    result = dciodvfy(paths[0])
    assert result.ok and result.iod == "Comprehensive3DSR", "\n".join(result.errors)
    ds = pydicom.dcmread(paths[0])
    assert ds.SOPClassUID == SR3D and ds.StudyInstanceUID == current.study_instance_uid
    assert objects[0]["sop_instance_uid"] == ds.SOPInstanceUID
    # Re-running gives the same instance (the PACS replaces it, no duplicate).
    again, _ = _write_dicom(None, current, analysis, _recommend(analysis, current, config, guideline), "",
                            tmp_path / "again", objects)
    assert pydicom.dcmread(again[0]).SOPInstanceUID == ds.SOPInstanceUID


def test_a_rerun_removes_only_its_own_stale_outputs(tmp_path: Path) -> None:
    """Key images of a nodule that is gone on a re-run disappear from the results folder; files we
    never wrote (``analyze --out`` may point at a shared folder) stay."""
    import json

    for name in ("seg.dcm", "sr.dcm", "key_nodule_1.dcm", "notes.dcm"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "summary.json").write_text(json.dumps(
        {"outputs": ["seg.dcm", "sr.dcm", "key_nodule_1.dcm", "../escape.dcm", "summary.json"]}))
    (tmp_path.parent / "escape.dcm").write_bytes(b"x")
    _remove_stale_outputs(tmp_path, ["sr.dcm", "summary.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.dcm", "sr.dcm", "summary.json"]
    assert (tmp_path.parent / "escape.dcm").exists()
    _remove_stale_outputs(tmp_path / "missing", ["sr.dcm"])  # no earlier summary: nothing to do


@pytest.mark.parametrize("spare_cores", [0, 1])
def test_background_warm_up_runs_only_on_a_spare_core(spare_cores: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every core taken by the analysis, loading the growth model alongside only slows it
    (GIL-bound imports); with one to spare the model is loaded by the time the thread ends."""
    import os

    from dicom_node import pipeline
    from inference.analysis import ANALYSIS_WORKERS

    monkeypatch.setattr(os, "cpu_count", lambda: ANALYSIS_WORKERS + spare_cores)
    monkeypatch.setattr(pipeline, "_FORECASTER", None)
    thread = pipeline.warm_up_in_background()
    if spare_cores == 0:
        assert thread is None
        assert pipeline._FORECASTER is None
    else:
        assert thread is not None
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert pipeline._FORECASTER is not None
