"""End to end: from the follow-up study being complete to its SEG + SR accepted by Orthanc.

    .venv/bin/python -m bench e2e [--runs 3] [--rows 512] [--seed 11]

A phantom patient (prior + follow-up, 512² slices) is sent to the node by dcmtk ``storescu``; the
prior is analysed first (as a baseline). Then the follow-up is sent, and the clock starts when
``noduletrack complete`` marks it complete; it stops when Orthanc (the PACS the node exports to)
holds both the SEG and the SR of the follow-up. Per stage: queue wait (job created → claimed), the
pipeline's own stage timings (from the analysis record), and export (outbox queued → sent). Each
run re-analyses the same follow-up (``complete`` again) so the run-to-run spread is the pipeline's.
Goal (issue 05): ≤ 20 s for a 300-slice pair on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests import peers  # noqa: E402  (real-peer launchers shared with the test suite)
from tests.node_support import Node, node_config, noduletrack, wait_until  # noqa: E402

SEG, SR3D = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"


def _storescu(port: int, aec: str, directory: Path) -> None:
    subprocess.run(["storescu", "-aec", aec, "+sd", "+r", "127.0.0.1", str(port), str(directory)],
                   env=peers.loopback_env(), check=True, capture_output=True, timeout=600)


def _sop_classes_in(orthanc: peers.Orthanc, study_uid: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inst in orthanc.instances_of_study(study_uid):
        cls = orthanc.get(f"/instances/{inst['ID']}/simplified-tags").get("SOPClassUID", "")
        counts[cls] = counts.get(cls, 0) + 1
    return counts


def _db_stages(db_path: Path, study_uid: str) -> dict[str, float]:
    """Queue wait and export time of the latest analysis of ``study_uid``, from the node's database."""
    from sqlalchemy import select

    from dicom_node.db import Database
    from dicom_node.models import Analysis, Job, OutboxItem, Study

    db = Database(f"sqlite:///{db_path}")
    try:
        with db.session() as s:
            study_pk = s.execute(select(Study.id).where(Study.study_instance_uid == study_uid)).scalar_one()
            job = s.execute(select(Job).where(Job.study_pk == study_pk, Job.kind == "analyze_study")
                            .order_by(Job.id.desc())).scalars().first()
            analysis = s.execute(select(Analysis).where(Analysis.study_pk == study_pk).order_by(Analysis.id.desc())).scalars().first()
            items = s.execute(select(OutboxItem).where(OutboxItem.study_pk == study_pk)).scalars().all()
            stages = {"queue wait": (job.started_at - job.created_at).total_seconds() if job and job.started_at else float("nan")}
            for name, seconds in (analysis.summary or {}).get("timings_s", {}).items():
                stages[f"pipeline: {name}"] = float(seconds)
            sent = [i.sent_at for i in items if i.sent_at is not None]
            if analysis and analysis.finished_at and sent:
                stages["export (analysis done → last object sent)"] = (max(sent) - analysis.finished_at).total_seconds()
            return stages
    finally:
        db.dispose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    from inference.phantoms import generate_patient, write_patient

    with tempfile.TemporaryDirectory(prefix="nt-bench-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        patient_dir = write_patient(generate_patient(args.seed, timepoints=2, rows=args.rows), tmp / "phantoms")
        truth = json.loads((patient_dir / "truth.json").read_text())
        prior_tp, follow_tp = truth["timepoints"][:2]
        port = peers.free_port()
        orthanc = peers.start_orthanc(tmp / "orthanc", modalities={"NODE": ("NODULETRACK", port)})
        config = node_config(
            tmp, port, storage={"spool": str(tmp / "spool"), "results": str(tmp / "results")},
            stability={"quiet_seconds": 3600, "sweep_seconds": 0.5},  # completion only by `complete`
            workers={"processes": 1, "poll_seconds": 0.1, "lease_seconds": 1800},
            pacs={"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port, "query_retrieve": False},
        )
        node = Node(config, tmp / "node.log").start(port)
        try:
            def analysed(uid: str, runs: int) -> bool:
                from sqlalchemy import func, select

                from dicom_node.db import Database
                from dicom_node.models import Analysis, Study

                db = Database(f"sqlite:///{tmp / 'node.db'}")
                try:
                    with db.session() as s:
                        return s.execute(select(func.count()).select_from(Analysis).join(Study, Analysis.study_pk == Study.id)
                                         .where(Study.study_instance_uid == uid)).scalar_one() >= runs
                finally:
                    db.dispose()

            _storescu(port, "NODULETRACK", patient_dir / prior_tp["dir"])
            noduletrack("complete", prior_tp["study_instance_uid"], config=config)
            wait_until(lambda: analysed(prior_tp["study_instance_uid"], 1), 1800, 0.5, "prior analysed")
            _storescu(port, "NODULETRACK", patient_dir / follow_tp["dir"])
            follow_uid = follow_tp["study_instance_uid"]
            totals: list[float] = []
            stage_runs: list[dict[str, float]] = []
            for run in range(args.runs):
                start = time.perf_counter()
                noduletrack("complete", follow_uid, config=config)
                wait_until(lambda: analysed(follow_uid, run + 1), 1800, 0.1, "follow-up analysed")
                if run == 0:
                    wait_until(lambda: (lambda c: c.get(SEG, 0) >= 1 and c.get(SR3D, 0) >= 1)(_sop_classes_in(orthanc, follow_uid)),
                               600, 0.1, "SEG + SR in Orthanc")
                else:  # a re-analysis gives the same objects: wait until this run's are sent
                    from sqlalchemy import func, select

                    from dicom_node.db import Database
                    from dicom_node.models import OutboxItem

                    def all_sent() -> bool:
                        db = Database(f"sqlite:///{tmp / 'node.db'}")
                        try:
                            with db.session() as s:
                                return s.execute(select(func.count()).select_from(OutboxItem)
                                                 .where(OutboxItem.state != "sent")).scalar_one() == 0
                        finally:
                            db.dispose()
                    wait_until(all_sent, 600, 0.1, "outbox sent")
                totals.append(time.perf_counter() - start)
                stage_runs.append(_db_stages(tmp / "node.db", follow_uid))
        finally:
            node.stop()
            orthanc.stop()

    print(f"\nbench e2e: phantom seed {args.seed}, prior {prior_tp['n_slices']} slices, follow-up {follow_tp['n_slices']} "
          f"slices of {args.rows}², {args.runs} run(s); median seconds")
    names = list(dict.fromkeys(k for r in stage_runs for k in r))
    width = max(len(n) for n in names + ["complete → SEG+SR accepted by Orthanc"]) + 2
    print(f"{'stage':<{width}}{'median s':>10}{'min s':>8}{'max s':>8}")
    for name in names:
        values = [r[name] for r in stage_runs if name in r]
        print(f"{name:<{width}}{statistics.median(values):>10.2f}{min(values):>8.2f}{max(values):>8.2f}")
    print(f"{'complete → SEG+SR accepted by Orthanc':<{width}}{statistics.median(totals):>10.2f}{min(totals):>8.2f}{max(totals):>8.2f}")
    print(f"goal ≤ 20 s: {'met' if statistics.median(totals) <= 20 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
