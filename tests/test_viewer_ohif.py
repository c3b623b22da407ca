"""A real viewer shows our SEG and SR: OHIF Viewer v3 in headless Debian chromium over Orthanc DICOMweb.

Recipe (PEERS.md): the prebuilt dist of npm ``@ohif/app`` (pinned, fetched once into .cache/ohif by
tests/viewer/setup.sh) is served on 127.0.0.1 by tests/viewer/server.js with an SPA fallback and a
same-origin proxy of /dicom-web to Orthanc's DICOMweb plugin; tests/viewer/check_ohif.js drives
chromium with puppeteer-core, waits on OHIF's own state and takes screenshots.

What is asserted, from OHIF's state in the page:
* SEG: the segmentationService holds one segmentation with every segment we wrote (each nodule and
  each predicted extent, by label), and it is shown as a labelmap representation in the viewport;
* SR: the SR display set carries each nodule's measurement with its SCOORD POLYLINE, and cornerstone's
  annotation state holds a drawn 2-point annotation per nodule tracking UID (what the SR viewport
  renders). OHIF 3.13 keeps an SR that was not written by OHIF itself ("not rehydratable") out of
  the measurementService until a user hydrates it, so that service is reported, not required.

Screenshots are written to the test's tmp_path; with NODULETRACK_UPDATE_SCREENSHOTS=1 they also
refresh the small copies in tests/viewer/screenshots/ that the README links.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from reports.keyimages import build_key_images
from reports.seg import build_seg
from reports.sr import build_sr
from tests import peers
from tests.reports_fixtures import phantom_case, write_ct

HERE = Path(__file__).resolve().parent / "viewer"
SCREENSHOTS = HERE / "screenshots"
MODEL = "test-1"


@pytest.fixture(scope="session")
def ohif_dist() -> Path:
    """The OHIF dist and puppeteer-core, installed once (idempotent setup script)."""
    proc = subprocess.run(["bash", str(HERE / "setup.sh")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"viewer setup failed:\n{proc.stderr[-3000:]}")
    dist = Path(proc.stdout.strip().splitlines()[-1])
    assert (dist / "index.html").is_file(), dist
    return dist


def _start_server(dist: Path, orthanc_http_port: int, log: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        ["node", str(HERE / "server.js"), str(dist), str(HERE / "app-config.js"), str(orthanc_http_port)],
        stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True, start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening "):
        peers.terminate(proc)
        raise RuntimeError(f"viewer server did not start: {line!r} {log.read_text(errors='replace')[-2000:]}")
    return proc, int(line.split()[1])


def _small_png(src: Path, dst: Path, width: int = 960) -> None:
    im = Image.open(src).convert("RGB")
    im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(colors=128).save(dst, optimize=True)


@pytest.mark.peers
def test_ohif_shows_seg_overlay_and_sr_measurements(ohif_dist: Path, orthanc_factory, tmp_path: Path) -> None:
    case = phantom_case(2, rows=256, slices=80)
    present = [n for n in case.nodules if n.current is not None]
    seg = build_seg(case.current, case.nodules, model_version=MODEL)
    sr = build_sr(case.current, case.nodules, seg, case.recommendation, model_version=MODEL,
                  prior_study_date=case.prior.study_date)

    orthanc = orthanc_factory(dicomweb=True)
    for path in write_ct(case.current, case.variant, tmp_path / "ct"):
        orthanc.upload(path.read_bytes())
    keys = build_key_images(case.prior, case.current, case.nodules, model_version=MODEL)
    for ds in (seg.dataset, sr.dataset, *[k.dataset for k in keys]):  # Orthanc accepts every object
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        assert orthanc.upload(buf.getvalue())["Status"] == "Success"

    server, port = _start_server(ohif_dist, orthanc.http_port, tmp_path / "server.log")
    try:
        expected_labels = {s.label for s in seg.segments}
        config = {
            "baseUrl": f"http://127.0.0.1:{port}",
            "studyUid": case.current.study_instance_uid,
            "outDir": str(tmp_path),
            "timeoutMs": 120000,
            "views": [
                {"name": "ohif-seg", "seriesUid": seg.dataset.SeriesInstanceUID, "wait": "segmentation",
                 "minSegments": len(expected_labels)},
                {"name": "ohif-sr", "seriesUid": sr.dataset.SeriesInstanceUID, "wait": "measurements",
                 "minMeasurements": len(present)},
            ],
        }
        (tmp_path / "viewer.json").write_text(json.dumps(config))
        env = dict(os.environ, NODE_PATH=str(ohif_dist.parent.parent / "viewer-node" / "node_modules"))
        proc = subprocess.run(["node", str(HERE / "check_ohif.js"), str(tmp_path / "viewer.json")],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    finally:
        peers.terminate(server)

    views = {v["name"]: v for v in report["views"]}
    # --- SEG: every segment in the segmentationService, shown in the viewport.
    seg_state = views["ohif-seg"]["state"]
    assert views["ohif-seg"]["ok"], json.dumps(seg_state)[:3000]
    (segmentation,) = [s for s in seg_state["segmentations"] if len(s["segments"]) == len(expected_labels)]
    assert {s["label"] for s in segmentation["segments"]} == expected_labels
    shown = [r for r in seg_state["representations"] if r["segmentationId"] == segmentation["id"]]
    assert shown and all(r["visible"] for r in shown) and shown[0]["type"] == "Labelmap"

    # --- SR: every nodule's measurement with image coordinates, drawn.
    sr_state = views["ohif-sr"]["state"]
    assert views["ohif-sr"]["ok"], json.dumps(sr_state)[:3000]
    (sr_set,) = [d for d in sr_state["displaySets"] if d["SeriesInstanceUID"] == sr.dataset.SeriesInstanceUID]
    by_uid = {m["trackingUid"]: m for m in sr_set["srMeasurements"]}
    drawn = {a["trackingUid"]: a for a in sr_state["annotations"] if len(a["points"]) == 2 and a["visible"]}
    for n in present:
        m = by_uid[n.tracking_uid]
        assert m["trackingId"] == n.tracking_id
        (coord,) = m["coords"]
        assert coord["valueType"] == "SCOORD" and coord["graphicType"] == "POLYLINE" and len(coord["graphicData"]) == 4
        assert any(label.startswith("Volume:") for label in m["labels"])  # the volumetric group merged in
        assert n.tracking_uid in drawn, f"{n.tracking_id} not drawn"

    # Keep the screenshots with the test's output (and refresh the README copies on request).
    for name in ("ohif-seg", "ohif-sr"):
        shot = Path(views[name]["screenshot"])
        assert shot.is_file() and shot.stat().st_size > 10_000
        if os.environ.get("NODULETRACK_UPDATE_SCREENSHOTS") == "1":
            _small_png(shot, SCREENSHOTS / f"{name}.png")
    print(f"viewer screenshots: {tmp_path}; measurementService entries: "
          f"{len(sr_state['measurements'])}; blocked non-loopback requests: {len(report['blockedRequests'])}")
    shutil.rmtree(tmp_path / "ct", ignore_errors=True)
