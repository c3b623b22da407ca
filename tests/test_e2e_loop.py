"""The closed loop: Orthanc auto-routes a follow-up CT to the node; SEG + SR + key images come back.

Everything is real: Orthanc with a Lua ``OnStableStudy`` router, dcmtk ``storescu`` as the modality,
the node (``noduletrack serve``) with a worker process running the full pipeline, and the outbox
sending the results back to Orthanc. Re-sending the follow-up and re-analysing must not duplicate
the results in Orthanc (deterministic UIDs).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dicom_node.db import Database
from dicom_node.models import Analysis, OutboxItem, Study
from inference.phantoms import generate_patient, write_patient
from tests import peers
from tests.node_support import Node, node_config, noduletrack, wait_until

SEG, SR3D, SC = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7"
ANALYSIS_TIMEOUT = 900  # seconds; the pipeline on a loaded 2-core CI machine


def _storescu(orthanc: peers.Orthanc, directory: Path) -> None:
    proc = subprocess.run(
        ["storescu", "-aec", orthanc.aet, "+sd", "+r", "127.0.0.1", str(orthanc.dicom_port), str(directory)],
        env=peers.loopback_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def _state(config: Path, study_uid: str) -> str:
    status = json.loads(noduletrack("status", "--json", config=config).stdout)
    return {s["study_instance_uid"]: s["state"] for s in status["studies"]}.get(study_uid, "absent")


def _results_in_orthanc(orthanc: peers.Orthanc, study_uid: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {SEG: [], SR3D: [], SC: []}
    for inst in orthanc.instances_of_study(study_uid):
        tags = orthanc.get(f"/instances/{inst['ID']}/simplified-tags")
        if tags.get("SOPClassUID") in found:
            found[tags["SOPClassUID"]].append(tags["SOPInstanceUID"])
    return found


@pytest.mark.slow
def test_followup_routed_from_orthanc_comes_back_with_seg_sr_and_key_images(tmp_path: Path, orthanc_factory, dciodvfy) -> None:
    patient = generate_patient(7, timepoints=2, rows=256)  # 3 solid nodules: growing, growing, resolved
    patient_dir = write_patient(patient, tmp_path / "phantoms")
    truth = json.loads((patient_dir / "truth.json").read_text())
    prior_tp, follow_tp = truth["timepoints"]

    port = peers.free_port()
    orthanc = orthanc_factory(modalities={"NODE": ("NODULETRACK", port)}, lua=peers.route_to_lua("NODE"), stable_age=2)
    config = node_config(
        tmp_path, port,
        storage={"spool": str(tmp_path / "spool"), "results": str(tmp_path / "results")},
        workers={"processes": 1, "poll_seconds": 0.5, "lease_seconds": 1800},
        pacs={"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port, "query_retrieve": True},
    )
    node = Node(config, tmp_path / "node.log").start(port)
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    try:
        _storescu(orthanc, patient_dir / prior_tp["dir"])
        wait_until(lambda: _state(config, prior_tp["study_instance_uid"]) in ("analysed", "failed"), ANALYSIS_TIMEOUT,
                   interval=2, what="prior analysed")
        assert _state(config, prior_tp["study_instance_uid"]) == "analysed", node.log()[-4000:]

        _storescu(orthanc, patient_dir / follow_tp["dir"])
        follow_uid = follow_tp["study_instance_uid"]

        def delivered(analyses: int) -> bool:
            """``analyses`` analyses of the follow-up recorded and every object they queued sent.

            The outbox sends SEG, SR, then the key images one by one: looking at Orthanc as soon as
            *some* key image is there can catch the association half-way (that race once made a
            complete first delivery look like "1 key image", and the re-analysis like new ones).
            """
            with db.session() as s:
                study_pk = s.execute(select(Study.id).where(Study.study_instance_uid == follow_uid)).scalar_one_or_none()
                if study_pk is None:
                    return False
                n = s.execute(select(func.count()).select_from(Analysis).where(Analysis.study_pk == study_pk)).scalar_one()
                items = s.execute(select(OutboxItem.state).where(OutboxItem.study_pk == study_pk)).scalars().all()
            return n >= analyses and bool(items) and all(state == "sent" for state in items)

        wait_until(lambda: delivered(1), ANALYSIS_TIMEOUT, interval=2, what="follow-up analysed and its results sent")
        found = _results_in_orthanc(orthanc, follow_uid)
        assert _state(config, follow_uid) == "analysed"
        assert len(found[SEG]) == 1 and len(found[SR3D]) == 1
        # Orthanc's copies are the objects we wrote, and they validate.
        for uid in found[SEG] + found[SR3D] + found[SC]:
            inst = orthanc.rest("POST", "/tools/lookup", uid.encode())[0]
            path = tmp_path / f"{uid}.dcm"
            path.write_bytes(orthanc.rest("GET", f"/instances/{inst['ID']}/file", raw=True))
            assert dciodvfy(path).ok, dciodvfy(path).errors

        with db.session() as s:
            study_pk = s.execute(select(Study.id).where(Study.study_instance_uid == follow_uid)).scalar_one()
            analysis = s.execute(select(Analysis).where(Analysis.study_pk == study_pk)).scalars().one()
            assert analysis.outcome == "ok"
            summary = analysis.summary
        assert summary["prior_study_instance_uid"] == prior_tp["study_instance_uid"]
        assert summary["recommendation"]["guideline"] in ("fleischner2017", "lungrads2022")
        tracked = [n for n in summary["nodules"] if n["status"] == "tracked"]
        assert tracked, "the follow-up's nodules were not matched to the prior's"
        present = [n for n in summary["nodules"] if n["volume_mm3"] is not None]
        assert len(found[SC]) == len(present), f"one key image per nodule of the follow-up: {len(found[SC])} for {len(present)}"

        # Re-send the follow-up and force a re-analysis: the same objects, not new ones.
        before = {k: sorted(v) for k, v in found.items()}
        _storescu(orthanc, patient_dir / follow_tp["dir"])
        assert noduletrack("complete", follow_uid, config=config).returncode == 0

        wait_until(lambda: delivered(2), ANALYSIS_TIMEOUT, interval=2, what="re-analysis delivered")
        after = {k: sorted(v) for k, v in _results_in_orthanc(orthanc, follow_uid).items()}
        # Same SOP Instance UIDs for every object type: the re-run replaced, nothing was added.
        assert after == before, {k: (len(before[k]), len(after[k])) for k in before}
    finally:
        db.dispose()
        assert node.stop() == 0, node.log()[-3000:]
