"""End to end: from the follow-up study being complete to its SEG + SR accepted by Orthanc.

    .venv/bin/python -m bench e2e [--runs 3] [--rows 512] [--seed 11]

A phantom patient (prior + follow-up, ~300 slices of 512²) is sent to the node by dcmtk ``storescu``;
the prior is analysed first (as a baseline). Then the follow-up is sent and ``noduletrack
complete`` marks it complete (completion by the quiet period is switched off here: it would only
add ``stability.quiet_seconds``). Each run completes the same follow-up again, so the run-to-run
spread is the node's. Every figure comes from the node's own records: the total runs from
``studies.completed_at`` to the outbox ``sent_at`` of the later of SEG and SR (Success from
Orthanc); per stage: queue wait, reading the series, the pipeline's stage timings, recording the
results, export. The imaging-analysis share (inference) is printed separately. Orthanc must hold
exactly one SR (and at most one SEG) for the follow-up after every run: re-analyses replace.
Goal (issue 05): ≤ 20 s for a 300-slice pair on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
    """Stages of the latest analysis of ``study_uid``, from the node's own records (seconds).

    ``complete → SEG+SR accepted`` runs from the study's completion (``studies.completed_at``) to
    the later of the SEG's and the SR's outbox ``sent_at`` (set when Orthanc answered the C-STORE
    with Success); when no nodule was found only the SR is written, and it alone counts.
    """
    from sqlalchemy import select

    from dicom_node.db import Database
    from dicom_node.models import Analysis, Job, OutboxItem, Study

    db = Database(f"sqlite:///{db_path}")
    try:
        with db.session() as s:
            study = s.execute(select(Study).where(Study.study_instance_uid == study_uid)).scalar_one()
            job = s.execute(select(Job).where(Job.study_pk == study.id, Job.kind == "analyze_study")
                            .order_by(Job.id.desc())).scalars().first()
            analysis = s.execute(select(Analysis).where(Analysis.study_pk == study.id).order_by(Analysis.id.desc())).scalars().first()
            items = s.execute(select(OutboxItem).where(OutboxItem.study_pk == study.id)).scalars().all()
            stages: dict[str, float] = {}
            if job is not None and job.started_at is not None:
                stages["queue wait (complete → job claimed)"] = (job.started_at - max(job.created_at, study.completed_at)).total_seconds()
            timings = dict((analysis.summary or {}).get("timings_s", {}))
            for name, seconds in timings.items():
                label = "pipeline total" if name == "total" else f"  {name}"
                stages[label] = float(seconds)
            if analysis.started_at and analysis.finished_at:
                inside = timings.get("load_series", 0.0) + timings.get("total", 0.0)
                stages["record results, queue export"] = (analysis.finished_at - analysis.started_at).total_seconds() - inside
            sent = [i.sent_at for i in items if i.sent_at is not None]
            if analysis.finished_at and sent:
                stages["export (recorded → last object accepted)"] = (max(sent) - analysis.finished_at).total_seconds()
            seg_sr = [i.sent_at for i in items if Path(i.path).name in ("seg.dcm", "sr.dcm") and i.sent_at is not None]
            if seg_sr and study.completed_at is not None:
                stages[TOTAL] = (max(seg_sr) - study.completed_at).total_seconds()
            stages[NODULES] = float(sum(1 for n in (analysis.summary or {}).get("nodules", []) if n.get("volume_mm3") is not None))
            return stages
    finally:
        db.dispose()


TOTAL = "complete → SEG+SR accepted by Orthanc"
NODULES = "nodules"
# The imaging analysis (inference/, another helper's) vs. what the node and the writers add.
ANALYSIS_STAGES = ("lung_mask", "registration", "detection", "segmentation", "tracking")


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
            stage_runs: list[dict[str, float]] = []
            for run in range(args.runs):
                noduletrack("complete", follow_uid, config=config)

                def delivered() -> bool:
                    from sqlalchemy import func, select

                    from dicom_node.db import Database
                    from dicom_node.models import OutboxItem

                    if not analysed(follow_uid, run + 1):
                        return False
                    db = Database(f"sqlite:///{tmp / 'node.db'}")
                    try:
                        with db.session() as s:
                            return s.execute(select(func.count()).select_from(OutboxItem)
                                             .where(OutboxItem.state != "sent")).scalar_one() == 0
                    finally:
                        db.dispose()

                wait_until(delivered, 3600, 0.2, "follow-up analysed and its results sent")
                stages = _db_stages(tmp / "node.db", follow_uid)
                if TOTAL not in stages:
                    raise RuntimeError(f"run {run}: no SEG/SR was delivered (see {tmp / 'node.log'})")
                classes = _sop_classes_in(orthanc, follow_uid)
                if classes.get(SR3D, 0) != 1 or classes.get(SEG, 0) > 1:
                    raise RuntimeError(f"run {run}: Orthanc holds {classes} for the follow-up (expected one SR, at most one SEG)")
                stage_runs.append(stages)
                print(f"run {run + 1}/{args.runs}: {stages[TOTAL]:.1f} s", flush=True)
        finally:
            node.stop()
            orthanc.stop()

    print(f"\nbench e2e: phantom seed {args.seed}, prior {prior_tp['n_slices']} slices, follow-up {follow_tp['n_slices']} "
          f"slices of {args.rows}², {args.runs} run(s), {int(stage_runs[-1][NODULES])} nodule(s) on the follow-up; seconds")
    names = list(dict.fromkeys(k for r in stage_runs for k in r if k not in (TOTAL, NODULES))) + [TOTAL]
    width = max(len(n) for n in names) + 2
    print(f"{'stage':<{width}}{'median':>9}{'min':>8}{'max':>8}")
    for name in names:
        values = [r[name] for r in stage_runs if name in r]
        if values:
            print(f"{name:<{width}}{statistics.median(values):>9.2f}{min(values):>8.2f}{max(values):>8.2f}")
    total = statistics.median(r[TOTAL] for r in stage_runs)
    analysis = statistics.median(sum(r.get(f"  {k}", 0.0) for k in ANALYSIS_STAGES) for r in stage_runs)
    print(f"imaging analysis (inference: {', '.join(ANALYSIS_STAGES)}): {analysis:.1f} s = {100 * analysis / total:.0f} % of the total")
    print(f"goal ≤ 20 s: {'met' if total <= 20 else 'NOT met'} (median {total:.1f} s); "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
