"""The node with a real PACS (Orthanc): auto-routing in, prior retrieval by C-MOVE, export out."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

from pydicom.filebase import DicomBytesIO
from sqlalchemy import func, select

from dicom_node import outbox
from dicom_node.config import load_config
from dicom_node.db import Database
from dicom_node.completion import sweep
from dicom_node.models import Instance, Job, OutboxItem, PriorLink, Series, Study, utcnow
from dicom_node.priors import ensure_prior, find_prior
from tests import peers
from tests.node_support import PYTHON, Node, ct_datasets, node_config, noduletrack, wait_until, write_series


def _upload(orthanc: peers.Orthanc, datasets: list) -> None:
    for ds in datasets:
        buf = DicomBytesIO()
        ds.save_as(buf, enforce_file_format=True)
        orthanc.upload(buf.getvalue())


def _status(config: Path) -> dict:
    return json.loads(noduletrack("status", "--json", config=config).stdout)


def test_orthanc_autoroutes_a_study_to_the_node(tmp_path: Path, orthanc_factory) -> None:
    port = peers.free_port()
    config = node_config(tmp_path, port)
    node = Node(config, tmp_path / "node.log").start(port)
    try:
        orthanc = orthanc_factory(modalities={"NODE": ("NODULETRACK", port)}, lua=peers.route_to_lua("NODE"), stable_age=1)
        study = ct_datasets(12, rows=32, patient_id="ROUTE1")
        _upload(orthanc, study)
        uid = str(study[0].StudyInstanceUID)

        def routed_and_complete():
            st = {s["study_instance_uid"]: s for s in _status(config)["studies"]}
            return st.get(uid) if st.get(uid, {}).get("state") == "queued" else None

        entry = wait_until(routed_and_complete, 60, interval=0.5, what="study routed and completed")
        assert entry == {"study_instance_uid": uid, "patient_id": "ROUTE1", "instances": 12, "state": "queued",
                         **{k: entry[k] for k in ("reason", "study_date")}}
        status = _status(config)
        assert status["queue"]["queued"] == 1 and set(status["outbox"]) >= {"pending", "sent", "failed"}
        # The human table and `complete` on the CLI.
        table = noduletrack("status", config=config).stdout
        assert uid in table and "ROUTE1" in table and "queued" in table
        assert noduletrack("complete", uid, config=config).returncode == 0
        unknown = noduletrack("complete", "1.2.3.4", config=config, check=False)
        assert unknown.returncode == 2 and "not in the database" in unknown.stdout
        assert noduletrack("complete", "../etc", config=config, check=False).returncode == 2
        assert _status(config)["queue"]["queued"] == 1  # forcing again did not duplicate the job
        # Our own results arriving in the same study do not make Orthanc route it again.
        assert "routed " in orthanc.log()
    finally:
        assert node.stop() == 0
    assert "node stopped" in node.log()


def test_prior_is_fetched_by_cmove_when_only_the_followup_is_routed(tmp_path: Path, orthanc_factory) -> None:
    port = peers.free_port()
    orthanc = orthanc_factory(modalities={"NODE": ("NODULETRACK", port)})
    config = node_config(tmp_path, port, pacs={"ae_title": orthanc.aet, "port": orthanc.dicom_port, "min_prior_days": 30,
                                               "max_prior_instances": 50})
    current = ct_datasets(8, rows=32, patient_id="PRI1", study_date=dt.date(2025, 6, 1), seed=1)
    prior = ct_datasets(10, rows=32, patient_id="PRI1", study_date=dt.date(2024, 6, 1), seed=2)
    older = ct_datasets(6, rows=32, patient_id="PRI1", study_date=dt.date(2023, 6, 1), seed=3)
    too_recent = ct_datasets(5, rows=32, patient_id="PRI1", study_date=dt.date(2025, 5, 20), seed=4)
    impostor = ct_datasets(5, rows=32, patient_id="PRI1", birth_date="19700101", study_date=dt.date(2025, 1, 1), seed=5)
    for study in (prior, older, too_recent, impostor, current):
        _upload(orthanc, study)
    node = Node(config, tmp_path / "node.log").start(port)
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    try:
        # Only the follow-up reaches the node (as a routing rule on new studies would do it).
        study_id = orthanc.rest("POST", "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": str(current[0].StudyInstanceUID)}})[0]
        orthanc.rest("POST", "/modalities/NODE/store", {"Resources": [study_id]})
        cur_uid = str(current[0].StudyInstanceUID)
        with db.session() as s:
            assert find_prior(s, cur_uid) is None
        link = ensure_prior(db, load_config(config), cur_uid)
        assert link.source == "pacs" and link.prior_study_uid == str(prior[0].StudyInstanceUID), link.reason
        assert "C-MOVE" in link.reason and "365 days" in link.reason
        with db.session() as s:
            found = find_prior(s, cur_uid)
            assert found is not None and found.study_instance_uid == str(prior[0].StudyInstanceUID)
            n = s.scalar(select(func.count()).select_from(Instance).join(Series).join(Study)
                         .where(Study.study_instance_uid == link.prior_study_uid))
            assert n == 10
            # The impostor (same ID, other birth date) and the too-recent study were not moved.
            held = set(s.execute(select(Study.study_instance_uid)).scalars())
            assert held == {cur_uid, str(prior[0].StudyInstanceUID)}
            assert s.scalar(select(func.count()).select_from(PriorLink)) == 1
        # The moved prior is not analysed on its own when it turns quiet; the follow-up is.
        done = sweep(db, load_config(config), now=utcnow() + dt.timedelta(seconds=30))
        assert set(done) == {cur_uid, link.prior_study_uid}
        with db.session() as s:
            states = dict(s.execute(select(Study.study_instance_uid, Study.state)).all())
            jobs = s.execute(select(Job.payload)).scalars().all()
        assert states == {cur_uid: "queued", link.prior_study_uid: "complete"}
        assert [j["study_instance_uid"] for j in jobs] == [cur_uid]
        # Second time: found in the database, no PACS traffic needed.
        again = ensure_prior(db, load_config(config), cur_uid)
        assert again.source == "database" and again.prior_study_uid == link.prior_study_uid
    finally:
        db.dispose()
        node.stop()


def test_export_survives_the_destination_being_down(tmp_path: Path, orthanc_factory) -> None:
    orthanc = orthanc_factory()
    config = node_config(tmp_path, peers.free_port(), pacs={"ae_title": orthanc.aet, "port": orthanc.dicom_port,
                                                            "retry_initial_seconds": 0.5, "retry_max_seconds": 1.0,
                                                            "max_attempts": 30},
                         workers={"processes": 0, "poll_seconds": 0.1})
    noduletrack("db", "upgrade", config=config)
    cfg = load_config(config)
    results = write_series(tmp_path / "results", ct_datasets(3, rows=16, patient_id="EXP1"))
    dead_end = f"NOBODY@127.0.0.1:{peers.free_port()}"
    db = Database(cfg.database.url)
    orthanc.stop()  # the PACS is down when the results are ready
    try:
        with db.write() as s:
            outbox.enqueue(s, results.files, outbox.pacs_destination(cfg))
            outbox.enqueue(s, results.files[:1], dead_end)
        with db.write() as s:  # give up quickly on the dead end only
            for item in s.execute(select(OutboxItem).where(OutboxItem.destination == dead_end)).scalars():
                item.attempts = cfg.pacs.max_attempts - 1
        log = open(tmp_path / "worker.log", "ab")
        proc = subprocess.Popen([PYTHON, "-m", "dicom_node.cli", "worker", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            def attempts() -> int:
                with db.session() as s:
                    return int(s.scalar(select(func.min(OutboxItem.attempts)).where(OutboxItem.destination != dead_end)) or 0)

            wait_until(lambda: attempts() >= 3, 60, what="three failed attempts while the PACS is down")
            with db.session() as s:
                rows = s.execute(select(OutboxItem)).scalars().all()
            assert all(r.state in ("pending", "sending") for r in rows if r.destination != dead_end)
            assert all("failed" in r.last_error or "association" in r.last_error for r in rows if r.destination != dead_end)
            orthanc.start()
            wait_until(lambda: _status(config)["outbox"]["sent"] == 3, 60, what="delivery after the PACS came back")
        finally:
            peers.terminate(proc)
        got = {i["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.instances_of_study(results.study_uid)}
        assert got == set(results.sop_uids)
        status = _status(config)
        assert status["outbox"] == {"pending": 0, "sending": 0, "sent": 3, "failed": 1}
        assert status["outbox_failures"][0]["destination"] == dead_end
        assert "export failed for good" in (tmp_path / "worker.log").read_text()
        backoffs = [outbox.backoff_seconds(a, 0.5, 1.0) for a in (1, 2, 3)]
        assert backoffs == [0.5, 1.0, 1.0]
    finally:
        db.dispose()
