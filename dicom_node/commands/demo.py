"""``noduletrack demo``: the whole loop on one machine, in one command.

Makes a synthetic patient (a prior and a follow-up chest CT with known nodules), starts the node
(``noduletrack serve`` on its built-in defaults, with its state in the demo directory), sends both
studies to it by C-STORE like a PACS would, waits for the analysis, and prints what came out: one
line per nodule, the recommendation, and where the SEG / SR / key images are. The node is stopped
at the end. Results stay in the demo directory; nothing is sent anywhere (no PACS is configured).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..config import Config

DEMO_SEED = 2026


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "demo",
        parents=[parent],
        help="run the whole loop on a synthetic patient: node up, studies in, SEG/SR out, a summary",
        description=(
            "Generate a phantom patient (prior + follow-up CT), start the node on its defaults with its "
            "state under --workdir, C-STORE both studies to it, wait for the analysis and print a summary "
            "of the nodules, the recommendation and the output files."
        ),
    )
    p.add_argument("--workdir", metavar="DIR", default="./var/demo", help="where everything goes (default: ./var/demo, recreated)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"phantom seed (default {DEMO_SEED})")
    p.add_argument("--rows", type=int, default=512, help="image matrix of the phantom studies (default 512)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the analysis (default 900)")
    p.set_defaults(func=run)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the node exited with code {proc.returncode} during start-up (see its log)")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"the node did not listen on {host}:{port} within {timeout:.0f} s")


def _send(files: list[Path], ae_title: str, host: str, port: int, label: str) -> int:
    """C-STORE ``files`` to the node like a PACS would; returns how many were acknowledged."""
    from pydicom import dcmread
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage
    from tqdm import tqdm

    ae = AE(ae_title="DEMO_PACS")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"the node at {host}:{port} refused the association")
    ok = 0
    try:
        for path in tqdm(files, desc=f"C-STORE {label}", unit="img", file=sys.stderr):
            status = assoc.send_c_store(dcmread(path))
            if status and status.Status == 0x0000:
                ok += 1
    finally:
        assoc.release()
    return ok


def _status(config_env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "dicom_node.cli", "status", "--json"], env=config_env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def print_summary(summary: dict[str, Any], result_dir: Path, truth: dict[str, Any] | None = None) -> None:
    """A short, readable table of one analysed study."""
    print()
    print(f"Study {summary['study_instance_uid']} ({summary.get('study_date') or 'no date'}), "
          f"prior {'none' if not summary.get('prior_study_instance_uid') else str(summary.get('interval_days')) + ' days earlier'}")
    header = f"{'nodule':<10}{'status':<9}{'type':<13}{'prior mm3':>10}{'now mm3':>10}{'change':>9}{'VDT d':>8}{'mean mm':>9}{'forecast':>22}"
    print(header)
    print("-" * len(header))
    for n in summary["nodules"]:
        p = n.get("predicted")
        forecast = "-" if not p else f"{_fmt(p['volume_mm3'])} mm3 @ {p['horizon_days']} d"
        change = "-" if n.get("volume_change_pct") is None else f"{n['volume_change_pct']:+.0f}%"
        print(f"{(n.get('tracking_id') or '?'):<10}{n.get('status', ''):<9}{n.get('consistency', ''):<13}"
              f"{_fmt(n.get('prior_volume_mm3')):>10}{_fmt(n.get('volume_mm3')):>10}{change:>9}"
              f"{_fmt(n.get('vdt_days')):>8}{_fmt(n.get('mean_diameter_mm'), digits=1):>9}{forecast:>22}")
    rec = summary.get("recommendation")
    if rec:
        lo, hi = rec.get("followup_months_min"), rec.get("followup_months_max")
        interval = "-" if lo is None else (f"{lo} months" if hi in (None, lo) else f"{lo}–{hi} months")
        print(f"\nRecommendation ({rec['guideline']}): category {rec['category']}, follow-up {interval}, due {rec.get('due_date') or '-'}")
        print("  " + rec["text"].replace("\n", "\n  "))
    print(f"\nOutputs in {result_dir}:")
    for name in summary.get("outputs", []):
        print(f"  {result_dir / name}")
    if truth:
        print("\nPhantom truth (what was planted):")
        for n in truth["nodules"]:
            vols = " → ".join("absent" if not t["present"] else f"{t['volume_mm3']:,.0f}" for t in n["timepoints"])
            vdt = f", VDT {n['vdt_days']:.0f} d" if n.get("vdt_days") else ""
            print(f"  {n['id']}: {n['consistency']} {n['margin']} {n['location']}, {n['pattern']}{vdt}, volume mm3 {vols}")


def run(args: argparse.Namespace, config: Config) -> int:
    import shutil

    from inference.phantoms import generate_patient, write_patient

    from ..pipeline import results_dir

    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    print(f"1/4  generating a phantom patient (seed {args.seed}) in {workdir / 'phantoms'}", flush=True)
    patient = generate_patient(args.seed, timepoints=2, rows=args.rows)
    patient_dir = write_patient(patient, workdir / "phantoms")
    truth = json.loads((patient_dir / "truth.json").read_text())

    host, port = config.node.host, config.node.port
    if not _port_free(host, port):
        port = _free_port()
        print(f"     port {config.node.port} is busy; the demo node uses {port}")
    env = dict(os.environ)
    env.update({
        "NODULETRACK_NODE_PORT": str(port),
        "NODULETRACK_STORAGE_SPOOL": str(workdir / "spool"),
        "NODULETRACK_STORAGE_RESULTS": str(workdir / "results"),
        "NODULETRACK_DATABASE_URL": f"sqlite:///{workdir / 'noduletrack.db'}",
        "NODULETRACK_STABILITY_QUIET_SECONDS": "3",
        "NODULETRACK_STABILITY_SWEEP_SECONDS": "1",
        "NODULETRACK_PACS_QUERY_RETRIEVE": "false",  # no PACS in the demo: results stay here
        "NODULETRACK_PACS_SEND_RESULTS": "false",
    })
    env.pop("NODULETRACK_CONFIG", None)
    log_path = workdir / "node.log"
    print(f"2/4  starting the node: AE {config.node.ae_title} on {host}:{port} (log: {log_path})", flush=True)
    with open(log_path, "wb") as log:
        node = subprocess.Popen([sys.executable, "-m", "dicom_node.cli", "serve"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(host, port, node)
        print("3/4  sending the prior, then the follow-up, by C-STORE", flush=True)
        uids = []
        for tp in truth["timepoints"]:
            files = sorted((patient_dir / tp["dir"]).glob("*.dcm"))
            acked = _send(files, config.node.ae_title, host, port, f"{tp['dir']} ({tp['study_date']})")
            if acked != len(files):
                print(f"noduletrack demo: only {acked} of {len(files)} instances were acknowledged", file=sys.stderr)
                return 1
            uids.append(tp["study_instance_uid"])
            # The prior is complete and analysed as a baseline before the follow-up arrives.
            if not _wait_analysed(env, tp["study_instance_uid"], args.timeout, node):
                return 1
        print("4/4  results", flush=True)
        follow_up = uids[-1]
        out = results_dir(_config_from_env(env), follow_up)
        summary = json.loads((out / "summary.json").read_text())
        print_summary(summary, out, truth)
        print(f"\nNode state: {workdir / 'noduletrack.db'}; received files: {workdir / 'spool'}; log: {log_path}")
        return 0
    finally:
        node.terminate()
        try:
            node.wait(60)
        except subprocess.TimeoutExpired:
            node.kill()


def _config_from_env(env: dict[str, str]) -> Config:
    from ..config import load_config

    return load_config(None, env=env)


def _wait_analysed(env: dict[str, str], study_uid: str, timeout: float, node: subprocess.Popen) -> bool:
    """Poll ``status --json`` until the study is analysed (True) or failed/timed out (False)."""
    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    state = "?"
    with tqdm(desc=f"     waiting for study …{study_uid[-8:]}", bar_format="{desc}: {postfix} [{elapsed}]", file=sys.stderr) as bar:
        while time.monotonic() < deadline:
            if node.poll() is not None:
                print(f"noduletrack demo: the node exited with code {node.returncode}", file=sys.stderr)
                return False
            studies = {s["study_instance_uid"]: s for s in _status(env)["studies"]}
            state = studies.get(study_uid, {}).get("state", "not yet indexed")
            bar.set_postfix_str(state)
            if state == "analysed":
                return True
            if state == "failed":
                print(f"noduletrack demo: the analysis failed: {studies[study_uid].get('reason', '')}", file=sys.stderr)
                return False
            time.sleep(1.0)
    print(f"noduletrack demo: study still '{state}' after {timeout:.0f} s", file=sys.stderr)
    return False
