"""kill -9 of the node during a 300-instance transfer: nothing acknowledged is lost or doubled."""

from __future__ import annotations

import threading
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import func, select

from dicom_node.db import Database, upgrade
from dicom_node.ingest import reindex_spool
from dicom_node.models import Instance
from dicom_node.spool import Spool, relative_path
from tests import peers
from tests.node_support import Node, ct_datasets, node_config, noduletrack, wait_until


def _send(port: int, datasets: list, acked: list[str], stop_after: threading.Event | None = None) -> None:
    """C-STORE each dataset; append the UID to ``acked`` only on a Success response."""
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="NODULETRACK")
    if not assoc.is_established:
        return
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except Exception:
                return
            if status is None or "Status" not in status:
                return  # aborted: the node died mid-instance, not acknowledged
            if int(status.Status) == 0x0000:
                acked.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()


def test_kill9_during_transfer_loses_nothing_acknowledged(tmp_path: Path) -> None:
    port = peers.free_port()
    config = node_config(tmp_path, port)
    noduletrack("db", "upgrade", config=config)
    datasets = ct_datasets(300, rows=64, seed=7)
    node = Node(config, tmp_path / "node.log").start(port)

    acked: list[str] = []
    sender = threading.Thread(target=_send, args=(port, datasets, acked))
    sender.start()
    wait_until(lambda: len(acked) >= 120, 120, interval=0.005, what="120 acknowledged instances")
    node.kill9()  # mid-transfer: a C-STORE is in flight right now
    sender.join(60)
    first_run = list(acked)
    assert 120 <= len(first_run) < 300, "the kill did not interrupt the transfer"

    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    try:
        # Straight after the crash (before any recovery): every acknowledged instance is on disk
        # complete and indexed.
        with db.session() as s:
            indexed = dict(s.execute(select(Instance.sop_instance_uid, Instance.path)).all())
        spool_root = tmp_path / "spool"
        for uid in first_run:
            assert uid in indexed, f"acknowledged {uid} not indexed after kill -9"
            assert str(dcmread(spool_root / indexed[uid]).SOPInstanceUID) == uid

        # Restart, resend everything (as a PACS would), check exactly-once.
        node = Node(config, tmp_path / "node2.log").start(port)
        acked2: list[str] = []
        _send(port, datasets, acked2)
        assert len(acked2) == 300, "resend not fully acknowledged"
        with db.session() as s:
            rows = s.execute(select(Instance.sop_instance_uid, Instance.path)).all()
            per_uid = s.execute(select(func.count(), func.count(func.distinct(Instance.sop_instance_uid)))).one()
        assert per_uid == (300, 300)
        assert {uid for uid, _ in rows} == {str(d.SOPInstanceUID) for d in datasets}
        files = sorted(p for p in spool_root.glob("??/*.dcm"))
        assert len(files) == 300
        assert list((spool_root / "tmp").iterdir()) == []
        for uid, path in rows:
            assert path == relative_path(uid)
        node.stop()
    finally:
        db.dispose()
        node.stop()


def test_restart_reindexes_files_renamed_but_not_indexed(tmp_path: Path) -> None:
    """The one crash window the SCP cannot close itself: renamed, not yet committed. Start-up
    indexes such files (they are complete and fsync'd); stray temp files are removed."""
    url = f"sqlite:///{tmp_path / 'n.db'}"
    upgrade(url)
    db = Database(url)
    spool = Spool(tmp_path / "spool")
    try:
        ds = ct_datasets(1, rows=16)[0]
        from pydicom.filebase import DicomBytesIO

        buf = DicomBytesIO()
        ds.save_as(buf, enforce_file_format=True)
        spool.write(str(ds.SOPInstanceUID), buf.getvalue())
        (spool.tmp / "half.part").write_bytes(b"\0" * 100)
        broken = spool.path_of(relative_path("1.2.3.4"))  # power loss before the fsync
        broken.write_bytes(b"\0" * 50)
        assert spool.clean_tmp() == 1
        assert reindex_spool(db, spool) == 1
        assert not broken.exists() and (spool.root / "quarantine" / broken.name).exists()
        assert reindex_spool(db, spool) == 0
        with db.session() as s:
            assert s.scalar(select(Instance.sop_instance_uid)) == str(ds.SOPInstanceUID)
    finally:
        db.dispose()
