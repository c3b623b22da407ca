"""The SCP against real clients (dcmtk, pynetdicom) and bad input.

Bad input must get a failure status (or a rejected presentation context) and one log line saying
why; the node stays up; nothing half-written: every file in the spool is indexed, every indexed
file exists and parses, and nothing is left in the spool's temp directory.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from sqlalchemy import func, select

from dicom_node.config import load_config
from dicom_node.db import upgrade
from dicom_node.logs import KeyValueFormatter
from dicom_node.ingest import SUPPORTED_SOP_CLASSES, SUPPORTED_TRANSFER_SYNTAXES
from dicom_node.models import AuditEvent, Instance
from dicom_node.scp import StorageSCP
from dicom_node.spool import relative_path
from tests import peers
from tests.node_support import ct_datasets, dcmtk, node_config, wait_until, write_series


@pytest.fixture
def scp(tmp_path: Path):
    port = peers.free_port()
    config = load_config(node_config(tmp_path, port, node={"allowed_calling_ae": ["STORESCU", "GOODSCU", "FINDSCU"],
                                                            "max_instance_mb": 1}))
    upgrade(config.database.url)
    node = StorageSCP(config)
    node.start()
    yield node
    node.stop()
    node.db.dispose()


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Captured records rendered as the node renders them (event plus key=value fields)."""
    fmt = KeyValueFormatter()
    return "\n".join(fmt.format(r) for r in caplog.records)


def _echo(port: int, calling: str = "GOODSCU", called: str = "NODULETRACK") -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return status is not None and status.Status == 0


def _assert_spool_consistent(node: StorageSCP) -> int:
    with node.db.session() as s:
        rows = s.execute(select(Instance.sop_instance_uid, Instance.path, Instance.size_bytes)).all()
    indexed = {path for _, path, _ in rows}
    on_disk = {str(p.relative_to(node.spool.root)) for p in node.spool.files()}
    assert on_disk == indexed, f"spool/index mismatch: only on disk {on_disk - indexed}, only indexed {indexed - on_disk}"
    assert list(node.spool.tmp.iterdir()) == [], "temporary files left behind"
    for uid, path, size in rows:
        assert path == relative_path(uid)
        full = node.spool.path_of(path)
        assert full.stat().st_size == size
        assert str(dcmread(full).SOPInstanceUID) == uid
    return len(rows)


@pytest.fixture
def scp_any_db(tmp_path: Path, db_url: str):
    """The SCP on SQLite and on a real PostgreSQL server."""
    port = peers.free_port()
    config = load_config(node_config(tmp_path, port, db_url, node={"allowed_calling_ae": ["STORESCU"]}))
    upgrade(config.database.url)
    node = StorageSCP(config)
    node.start()
    yield node
    node.stop()
    node.db.dispose()


def test_dcmtk_echoscu_and_storescu(scp_any_db: StorageSCP, tmp_path: Path) -> None:
    scp = scp_any_db
    env = peers.loopback_env()
    echo = subprocess.run([dcmtk("echoscu"), "-aet", "STORESCU", "-aec", "NODULETRACK", "127.0.0.1", str(scp.port)],
                          capture_output=True, text=True, env=env)
    assert echo.returncode == 0, echo.stderr
    series = write_series(tmp_path / "ct", ct_datasets(20, rows=64))
    store = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "NODULETRACK", "127.0.0.1", str(scp.port),
                            *map(str, series.files)], capture_output=True, text=True, env=env)
    assert store.returncode == 0, store.stderr
    assert _assert_spool_consistent(scp) == 20
    # Bit-preserving: the spooled file's dataset bytes are the sender's.
    original = series.files[3].read_bytes()
    stored = scp.spool.path_of(relative_path(series.sop_uids[3])).read_bytes()
    assert dcmread(series.files[3]).PixelData == dcmread(scp.spool.path_of(relative_path(series.sop_uids[3]))).PixelData
    assert original[-1000:] == stored[-1000:]
    # Sending the same series again is idempotent.
    again = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "NODULETRACK", "127.0.0.1", str(scp.port),
                            *map(str, series.files)], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert _assert_spool_consistent(scp) == 20
    def audits() -> list[AuditEvent]:
        with scp.db.session() as s:
            return list(s.execute(select(AuditEvent).where(AuditEvent.kind == "association")).scalars())

    audits = wait_until(lambda: (a := audits()) and len(a) == 3 and a, 10, what="3 audit rows")  # written at close
    stored_counts = sorted(a.detail["stored"] for a in audits)
    assert stored_counts == [0, 0, 20] and any(a.detail["duplicates"] == 20 for a in audits)
    assert all(a.calling_ae == "STORESCU" for a in audits)


def test_association_checks(scp: StorageSCP, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="noduletrack.scp")
    assert _echo(scp.port)
    assert not _echo(scp.port, calling="INTRUDER")
    assert not _echo(scp.port, called="SOMEONEELSE")
    # The server thread logs the rejection; the client may see it first.
    text = wait_until(lambda: (t := _log_text(caplog)).count("association rejected") >= 2 and t, 10, what="two log lines")
    assert "association rejected" in text and "INTRUDER" in text and "not in node.allowed_calling_ae" in text
    assert "SOMEONEELSE" in text and "is not ours" in text


def _send_file(port: int, path: Path, sop_class: str, transfer_syntax: str) -> int | None:
    """Send a file's bytes as they are (no parsing by the SCU); the status, or None if refused."""
    ae = AE(ae_title="GOODSCU")
    ae.add_requested_context(sop_class, [transfer_syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="NODULETRACK")
    if not assoc.is_established:  # the only proposed context was rejected
        return None
    try:
        status = assoc.send_c_store(path)
        return None if status is None or "Status" not in status else int(status.Status)
    except ValueError:  # no accepted presentation context
        return None
    finally:
        assoc.release()


def _file(directory: Path, name: str, ds: Dataset, sop_class: str, sop_uid: str) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = directory / name
    # Written by hand: pydicom would refuse (or fix) the broken datasets these tests need.
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    path.write_bytes(b"\x00" * 128 + b"DICM" + meta.getvalue() + buf.getvalue())
    return path


def test_bad_input_gets_failure_status_and_log_line(scp: StorageSCP, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    caplog.set_level(logging.WARNING, logger="noduletrack.scp")
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send bytes as they are
    bad = tmp_path / "bad"
    bad.mkdir()
    ct = CT = "1.2.840.10008.5.1.4.1.1.2"
    good = ct_datasets(1, rows=16)[0]
    cases: dict[str, tuple[Path, str]] = {}

    # '../' in the SOP Instance UID (both in the command and the dataset).
    ds = ct_datasets(1, rows=16)[0]
    ds.SOPInstanceUID = "1.2.3/../../../etc/passwd"
    cases["traversal"] = (_file(bad, "traversal.dcm", ds, CT, ds.SOPInstanceUID), "invalid Affected SOP Instance UID")
    # Too long / non-digit UID.
    ds = ct_datasets(1, rows=16)[0]
    ds.SOPInstanceUID = "1.2." + "9" * 70  # pynetdicom won't put this in a command: only in the dataset
    cases["too long"] = (_file(bad, "long.dcm", ds, CT, generate_uid()), "invalid SOP Instance UID in dataset")
    ds = ct_datasets(1, rows=16)[0]
    ds.SOPInstanceUID = "1.2.abc"
    cases["letters"] = (_file(bad, "letters.dcm", ds, CT, ds.SOPInstanceUID), "invalid Affected SOP Instance UID")
    # SOP Instance UID missing from the dataset (the command still carries one).
    ds = ct_datasets(1, rows=16)[0]
    uid = str(ds.SOPInstanceUID)
    del ds.SOPInstanceUID
    cases["missing uid"] = (_file(bad, "nouid.dcm", ds, CT, uid), "SOP Instance UID (0008,0018) missing")
    # Dataset says MR while the request says CT.
    ds = ct_datasets(1, rows=16)[0]
    ds.SOPClassUID = MRImageStorage
    cases["class mismatch"] = (_file(bad, "mismatch.dcm", ds, CT, str(ds.SOPInstanceUID)), "differs from the C-STORE request")
    # Truncated: a complete header but the pixel data cut short.
    ok_path = _file(bad, "ok.dcm", good, CT, str(good.SOPInstanceUID))
    data = ok_path.read_bytes()
    trunc = bad / "truncated.dcm"
    trunc.write_bytes(data[: len(data) - 200])
    cases["truncated pixels"] = (trunc, "")
    # Truncated inside the header.
    ds = ct_datasets(1, rows=16)[0]
    p = _file(bad, "h.dcm", ds, CT, str(ds.SOPInstanceUID))
    raw = p.read_bytes()
    cut = bad / "cut_header.dcm"
    cut.write_bytes(raw[: raw.index(b"CT CHEST") + 3])
    cases["truncated header"] = (cut, "")
    # Garbage after valid file meta.
    ds = ct_datasets(1, rows=16)[0]
    p = _file(bad, "g.dcm", ds, CT, str(ds.SOPInstanceUID))
    _meta, offset = split_dataset(p)
    garbage = bad / "garbage.dcm"
    garbage.write_bytes(p.read_bytes()[:offset] + os.urandom(5000))
    cases["garbage"] = (garbage, "")

    for name, (path, reason) in cases.items():
        caplog.clear()
        status = _send_file(scp.port, path, CT, ExplicitVRLittleEndian)
        assert status is not None and status != 0x0000 and (status >> 12) in (0xA, 0xC, 0x0), f"{name}: status {status}"
        assert "instance refused" in _log_text(caplog), f"{name}: no log line"
        if reason:
            assert reason in _log_text(caplog), f"{name}: log does not say why: {_log_text(caplog)}"

    # An unsupported SOP class is refused at negotiation.
    mr = ct_datasets(1, rows=16)[0]
    mr.SOPClassUID = MRImageStorage
    mr_path = _file(bad, "mr.dcm", mr, MRImageStorage, str(mr.SOPInstanceUID))
    assert _send_file(scp.port, mr_path, MRImageStorage, ExplicitVRLittleEndian) is None
    # An instance over node.max_instance_mb (1 MiB here) is refused with Out of Resources.
    big = ct_datasets(1, rows=800)[0]
    big_path = _file(bad, "big.dcm", big, CT, str(big.SOPInstanceUID))
    caplog.clear()
    assert _send_file(scp.port, big_path, CT, ExplicitVRLittleEndian) == 0xA700
    assert "exceeds node.max_instance_mb" in _log_text(caplog)
    # ...and it was dropped while it arrived (memory bounded by the limit), not after.
    assert "dropped while receiving" in _log_text(caplog)

    # The node is still up, accepts a good instance, and nothing was half-written.
    assert _echo(scp.port)
    assert _send_file(scp.port, ok_path, CT, ExplicitVRLittleEndian) == 0x0000
    assert _assert_spool_consistent(scp) == 1
    assert not (Path("/etc/passwd.dcm")).exists()


def _pydicom_test_files() -> list[Path]:
    """pydicom's bundled test files plus the pydicom-data package's (module ``data_store``).

    Listed from disk: pydicom's get_testdata_files() tries to download files whose hashes differ
    from its list, and there is no network here.
    """
    import data_store  # the pydicom-data distribution
    import pydicom.data

    roots = [Path(pydicom.data.__file__).parent / "test_files", Path(data_store.__file__).parent / "data"]
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc", ".json", ".txt", ".gz", ".bz2"))


def test_every_pydicom_test_file(scp: StorageSCP, caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    """Each file of pydicom's test data (pydicom-data): answered, node up, spool consistent."""
    caplog.set_level(logging.WARNING, logger="noduletrack.scp")
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    scp.max_bytes = 2048 * 1024 * 1024  # the fixture's 1 MiB limit would refuse the Enhanced CT
    files = _pydicom_test_files()
    assert len(files) > 100, "pydicom-data not installed?"
    outcome = {"stored": 0, "refused_status": 0, "refused_context": 0, "not_sendable": 0}
    accepted: set[tuple[str, str]] = set()
    supported_ts = set(SUPPORTED_TRANSFER_SYNTAXES)
    for path in files:
        try:
            meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
            sop_class = str(meta.MediaStorageSOPClassUID)
            ts = str(meta.TransferSyntaxUID)
            sop_uid = str(meta.MediaStorageSOPInstanceUID)
        except Exception:
            outcome["not_sendable"] += 1  # no usable file meta: a sender could not send it either
            continue
        if not sop_class or not ts or len(sop_uid) > 64 or not sop_uid:
            outcome["not_sendable"] += 1
            continue
        caplog.clear()
        try:
            status = _send_file(scp.port, path, sop_class, ts)
        except (AttributeError, OSError, KeyError):
            outcome["not_sendable"] += 1
            continue
        if status is None:
            assert sop_class not in SUPPORTED_SOP_CLASSES or ts not in supported_ts, f"{path.name} refused at negotiation"
            outcome["refused_context"] += 1
        elif status == 0:
            outcome["stored"] += 1
            accepted.add((sop_class, ts))
        else:
            assert "instance refused" in _log_text(caplog), f"{path.name}: status 0x{status:04X} without a log line"
            outcome["refused_status"] += 1
    assert _echo(scp.port), "node not answering after pydicom's test files"
    stored = _assert_spool_consistent(scp)
    print(outcome, "distinct stored:", stored)
    assert outcome["stored"] >= 20 and outcome["refused_context"] >= 20
    # (Several files share a SOP Instance UID in different encodings: the first one stored wins.)
    syntaxes = {ts for _, ts in accepted}
    classes = {c for c, _ in accepted}
    # Real-world variety was accepted: JPEG lossless, JPEG 2000, RLE, deflate, big endian, implicit...
    assert {"1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2"} <= syntaxes, syntaxes
    # ...and CT, Enhanced CT, SEG, SR and Secondary Capture.
    assert {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.66.4",
            "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7"} <= classes, classes


def test_tls(tmp_path: Path) -> None:
    """node.tls_cert/tls_key: echo over TLS works, a plain-TCP association does not."""
    import ssl

    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    port = peers.free_port()
    config = load_config(node_config(tmp_path, port, node={"tls_cert": str(cert), "tls_key": str(key)}))
    upgrade(config.database.url)
    node = StorageSCP(config)
    node.start()
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = AE(ae_title="TLSSCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="NODULETRACK", tls_args=(ctx, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert not _echo(port, calling="PLAIN")
    finally:
        node.stop()
        node.db.dispose()


def test_association_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="noduletrack.scp")
    port = peers.free_port()
    config = load_config(node_config(tmp_path, port, node={"max_associations": 1}))
    upgrade(config.database.url)
    node = StorageSCP(config)
    node.start()
    try:
        ae = AE(ae_title="FIRST")
        ae.add_requested_context("1.2.840.10008.1.1")
        first = ae.associate("127.0.0.1", port, ae_title="NODULETRACK")
        assert first.is_established
        assert not _echo(port, calling="SECOND")  # over node.max_associations
        first.release()
        assert wait_until(lambda: _echo(port, calling="THIRD"), 10, what="a free association slot")
        assert "too many associations" in _log_text(caplog)
    finally:
        node.stop()
        node.db.dispose()


def test_c_store_response_fast_path_matches_pynetdicom() -> None:
    """reactor.encode_c_store_rsp writes the same command set bytes as pynetdicom's own encoder
    (UIDs of odd and even length, any status, with or without the optional UIDs), and declines
    responses with optional elements it does not write."""
    import itertools

    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE

    from dicom_node.reactor import encode_c_store_rsp

    def pynetdicom_bytes(primitive: C_STORE) -> bytes:
        message = C_STORE_RSP()
        message.primitive_to_message(primitive)
        (pdata,) = list(message.encode_msg(1, 0))
        return bytes(pdata.presentation_data_value_list[0][1][1:])  # after the control header

    checked = 0
    for sop_class, sop_instance, status, message_id in itertools.product(
            ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", None],
            ["1.2.3", "1.2.34", "1." + "2" * 62, None], [0x0000, 0xA700, 0xB000, 0xC211, 0xFFFF], [0, 1, 65535]):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = message_id
        rsp.AffectedSOPClassUID = sop_class
        rsp.AffectedSOPInstanceUID = sop_instance
        rsp.Status = status
        assert encode_c_store_rsp(rsp) == pynetdicom_bytes(rsp), (sop_class, sop_instance, status, message_id)
        checked += 1
    assert checked == 180

    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.Status = 0xC000
    rsp.ErrorComment = "cannot understand"
    assert encode_c_store_rsp(rsp) is None  # pynetdicom's path writes the comment
    request = C_STORE()
    request.MessageID = 1
    assert encode_c_store_rsp(request) is None  # requests are not responses


def test_header_values_from_raw_elements_match_pydicom() -> None:
    """The values the index reads straight from raw elements (ingest._get) equal pydicom's decoded
    ones on every pydicom test file that parses (character sets, padding, implicit VR, odd
    values); where the raw bytes are ambiguous the fast path defers to pydicom."""
    import warnings

    from dicom_node import ingest

    compared = fast = 0
    for path in _pydicom_test_files():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = dcmread(path, stop_before_pixels=True)
                candidate = dcmread(path, stop_before_pixels=True)
                expected = {k: reference.get(k) for k in ingest._FAST_KEYWORDS}
        except Exception:
            continue  # not a file pydicom reads (the SCP test covers what happens to those)
        for keyword in ingest._FAST_KEYWORDS:
            raw = ingest._raw_value(candidate, keyword)
            fast += raw is not ingest._SLOW and raw is not ingest._MISSING
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = ingest._get(candidate, keyword)
            want = expected[keyword]
            if isinstance(want, int) or want is None:
                assert got == want, (path.name, keyword, got, want)
            else:
                assert str(got) == str(want), (path.name, keyword, got, want)
            compared += 1
    assert compared > 2000 and fast > 1000, (compared, fast)


def test_c_store_request_fast_path_matches_pynetdicom() -> None:
    """reactor.decode_c_store_rq reads the same C-STORE request parameters as pynetdicom's own
    decoding, and declines command sets with anything else in them (pynetdicom then decodes)."""
    import itertools
    from io import BytesIO

    from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
    from pynetdicom.dimse_primitives import C_STORE

    from dicom_node import reactor

    reactor.install()
    fields = ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
              "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID")
    fast = 0
    for sop_class, sop_instance, priority, message_id, originator in itertools.product(
            ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"], ["1.2.3", "1.2.34", "1." + "2" * 62],
            [0, 1, 2], [0, 7, 65535], [None, "NODULETRACK"]):
        request = C_STORE()
        request.MessageID = message_id
        request.AffectedSOPClassUID = sop_class
        request.AffectedSOPInstanceUID = sop_instance
        request.Priority = priority
        if originator:
            request.MoveOriginatorApplicationEntityTitle = originator
            request.MoveOriginatorMessageID = 3
        request.DataSet = BytesIO(b"\x08\x00\x18\x00" + b"\x00" * 12)
        message = C_STORE_RQ()
        message.primitive_to_message(request)
        pdatas = list(message.encode_msg(1, 16382))
        received = []
        for use_fast in (True, False):
            incoming = DIMSEMessage()
            done = [incoming.decode_msg(pdata) for pdata in pdatas][-1]
            assert done
            if use_fast:
                params = reactor.decode_c_store_rq(incoming.encoded_command_set.getvalue())
                assert (params is None) == bool(originator), (sop_instance, originator)
                fast += params is not None
                received.append(incoming.message_to_primitive())  # the installed fast path
            else:
                received.append(reactor._original_message_to_primitive(incoming))
        got, want = received
        for name in fields:
            assert getattr(got, name) == getattr(want, name), (name, getattr(got, name), getattr(want, name))
        assert got.DataSet.getvalue() == want.DataSet.getvalue() == request.DataSet.getvalue()
        assert got._context_id == want._context_id == 1
    assert fast == 54
    assert reactor.decode_c_store_rq(b"\x00\x00\x00\x00\x04\x00\x00\x00") is None  # incomplete
    assert reactor.decode_c_store_rq(b"\x00\x00\x00\x00\x04\x00\x00\x00\x00") is None  # truncated


def test_pdv_items_split_as_pynetdicom_decodes_them() -> None:
    """reactor.split_pdv_items yields the P-DATA-TF items pynetdicom's decoder yields (one or
    several items, command and data fragments, empty fragments) and declines malformed lists."""
    import random

    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    from dicom_node.reactor import split_pdv_items

    rng = random.Random(5)
    for _ in range(200):
        pdata = P_DATA()
        for _ in range(rng.randint(1, 4)):
            control = rng.choice([0x00, 0x01, 0x02, 0x03])
            payload = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 2, 17, 300])))
            pdata.presentation_data_value_list.append((rng.choice([1, 3, 255]), bytes([control]) + payload))
        encoded = P_DATA_TF(pdata).encode()
        reference = P_DATA_TF()
        reference.decode(encoded)
        want = [(cid, bytes(data)) for cid, data in reference.to_primitive().presentation_data_value_list]
        got = split_pdv_items(bytearray(encoded[6:]))
        assert got is not None and [(cid, bytes(data)) for cid, data in got] == want
    body = bytearray(P_DATA_TF(pdata).encode()[6:])
    assert split_pdv_items(body[:-1]) is None  # last item cut short
    assert split_pdv_items(body + b"\x00\x00") is None  # trailing bytes that are no item
    assert split_pdv_items(bytearray(b"\x00\x00\x00\x01\x01")) is None  # item without a control header
    assert split_pdv_items(bytearray()) is None


def test_receive_shortcuts_only_on_the_checked_pynetdicom_series() -> None:
    import pynetdicom

    from dicom_node import reactor

    assert reactor.fast_paths_supported(pynetdicom.__version__)  # the pinned release gets them
    assert reactor.fast_paths_supported("3.0.9")
    assert not reactor.fast_paths_supported("3.1.0")
    assert not reactor.fast_paths_supported("4.0.0")
