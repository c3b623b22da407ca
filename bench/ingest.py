"""Ingest throughput: the same 300-slice 512² CT series from dcmtk ``storescu`` to dcmtk
``storescp``, to Orthanc and to the node, at 1 and 4 associations, in one run.

    .venv/bin/python -m bench ingest [--runs 3] [--slices 300] [--receivers 2]
    .venv/bin/python -m bench.ingest ...

Every receiver starts fresh for every run (empty storage, so no duplicate shortcuts). Durability
as each peer offers it: storescp writes without fsync (the near-limit), Orthanc fsyncs each file
(``SyncStorageArea``, its default), the node writes each file to a temporary name, renames it and
fsyncs it (one journal commit covers data and name, see ``Spool.commit``) and indexes it in SQLite
before acknowledging. ``TCP_NODELAY=1`` for every dcmtk process and Orthanc (PEERS.md).
Prints images/s (median of the runs), the node's ratio to the others (of the medians, and the
median of the per-run ratios: the runs are interleaved, so each run's ratio compares receivers
under nearly the same background load) and the load average. All on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests import peers  # noqa: E402  (real-peer launchers shared with the test suite)
from tests.node_support import PYTHON, ct_datasets, dcmtk, node_config, write_series  # noqa: E402


def _send(files: list[Path], port: int, aec: str, associations: int) -> float:
    """Wall time for ``associations`` parallel storescu processes to send ``files``."""
    groups = [files[i::associations] for i in range(associations)]
    env = peers.loopback_env()
    start = time.perf_counter()
    procs = [
        subprocess.Popen([dcmtk("storescu"), "-aet", "BENCH", "-aec", aec, "127.0.0.1", str(port), *map(str, g)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        for g in groups
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - start
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed ({p.returncode}): {err.decode(errors='replace')[-500:]}")
    return elapsed


class Storescp:
    name = "dcmtk storescp (no fsync)"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def __enter__(self) -> "Storescp":
        out = self.workdir / "storescp"
        out.mkdir(parents=True)
        self.port = peers.free_port()
        self.proc = subprocess.Popen([dcmtk("storescp"), "--fork", "-aet", "STORESCP", "+B", "-od", str(out), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=peers.loopback_env())
        peers.wait_for_port(self.port, 30, self.proc)
        self.aec, self.out = "STORESCP", out
        return self

    def count(self) -> int:
        return sum(1 for _ in self.out.iterdir())

    def __exit__(self, *exc: object) -> None:
        peers.terminate(self.proc)


class Orthanc:
    name = "Orthanc 1.10 (fsync)"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def __enter__(self) -> "Orthanc":
        self.orthanc = peers.start_orthanc(self.workdir / "orthanc", aet="ORTHANC")
        self.port, self.aec = self.orthanc.dicom_port, "ORTHANC"
        return self

    def count(self) -> int:
        return int(self.orthanc.get("/statistics")["CountInstances"])

    def __exit__(self, *exc: object) -> None:
        self.orthanc.stop()


class NodeReceiver:
    def __init__(self, workdir: Path, receivers: int) -> None:
        self.workdir, self.receivers = workdir, receivers
        self.name = f"NoduleTrack (fsync + index, {receivers} receiver{'s' if receivers > 1 else ''})"

    def __enter__(self) -> "NodeReceiver":
        work = self.workdir / "node"
        work.mkdir(parents=True)
        self.port, self.aec = peers.free_port(), "NODULETRACK"
        self.config = node_config(work, self.port, node={"receivers": self.receivers, "max_associations": 16},
                                  storage={"fsync": True}, stability={"quiet_seconds": 3600},
                                  logging={"level": "INFO"})
        self.log = open(work / "node.log", "ab")
        self.proc = subprocess.Popen([PYTHON, "-m", "dicom_node.cli", "serve", "--config", str(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd="/")
        peers.wait_for_port(self.port, 60, self.proc)
        # Every receiver process is up (and done importing) once serve logs "node started".
        deadline = time.monotonic() + 120
        while "node started" not in (work / "node.log").read_text(errors="replace"):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("node did not start: " + (work / "node.log").read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        time.sleep(1.0)  # let the start-up CPU burst settle, as for the other receivers
        return self

    def count(self) -> int:
        out = subprocess.run([PYTHON, "-m", "dicom_node.cli", "status", "--json", "--config", str(self.config)],
                             capture_output=True, text=True, check=True, cwd="/").stdout
        return sum(s["instances"] for s in json.loads(out)["studies"])

    def __exit__(self, *exc: object) -> None:
        peers.terminate(self.proc, timeout=30)
        self.log.close()


def _measure_once(make: Callable[[Path], object], files: list[Path], associations: int, tmp: Path) -> float:
    workdir = tmp / f"run-{associations}-{time.monotonic_ns()}"
    workdir.mkdir()
    try:
        with make(workdir) as receiver:  # type: ignore[attr-defined]
            elapsed = _send(files, receiver.port, receiver.aec, associations)
            got = receiver.count()
            if got != len(files):
                raise RuntimeError(f"{receiver.name}: {got} of {len(files)} instances stored")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        # The file system is mounted with online discard: the journal commit after a large delete
        # does the discards, so without this the next receiver's first fsyncs pay for this cleanup.
        os.sync()
    return len(files) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per cell (median reported)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--receivers", type=int, default=2, help="node.receivers for the node")
    parser.add_argument("--associations", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nt-bench-ingest-") as tmpname:
        tmp = Path(tmpname)
        series = write_series(tmp / "series", ct_datasets(args.slices, rows=args.rows, seed=1))
        size_mb = sum(f.stat().st_size for f in series.files) / 1e6
        print(f"series: {args.slices} CT slices of {args.rows}², {size_mb:.0f} MB; storescu with TCP_NODELAY=1; "
              f"median of {args.runs} runs; fresh receiver per run; load average "
              + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
        makers: list[tuple[str, Callable[[Path], object]]] = [
            ("storescp", Storescp),
            ("orthanc", Orthanc),
            ("node", lambda w: NodeReceiver(w, args.receivers)),
        ]
        names = {key: make(tmp).name for key, make in makers}  # type: ignore[attr-defined]
        # Interleaved (run 1 of every receiver, then run 2, ...) so that all three see the same
        # background load; the machine is shared.
        rates: dict[str, dict[int, list[float]]] = {key: {n: [] for n in args.associations} for key in names}
        for run in range(args.runs):
            for n in args.associations:
                for key, make in makers:
                    rate = _measure_once(make, series.files, n, tmp)
                    rates[key][n].append(rate)
                    print(f"  run {run + 1}: {names[key]:<44} {n} assoc: {rate:7.1f} img/s"
                          f"   (load {os.getloadavg()[0]:.2f})", flush=True)
        results = {key: {n: statistics.median(r) for n, r in per.items()} for key, per in rates.items()}

        cols = args.associations
        print()
        header = f"{'receiver':<46}" + "".join(f"{f'{n} assoc img/s':>16}" for n in cols)
        print(header)
        print("-" * len(header))
        for key in results:
            print(f"{names[key]:<46}" + "".join(f"{results[key][n]:>16.1f}" for n in cols))
        print(f"{'ratio node / Orthanc':<46}" + "".join(f"{results['node'][n] / results['orthanc'][n]:>16.2f}" for n in cols))
        print(f"{'ratio node / storescp':<46}" + "".join(f"{results['node'][n] / results['storescp'][n]:>16.2f}" for n in cols))
        per_run = {n: statistics.median(a / b for a, b in zip(rates["node"][n], rates["orthanc"][n])) for n in cols}
        print(f"{'median of per-run ratios node / Orthanc':<46}" + "".join(f"{per_run[n]:>16.2f}" for n in cols))
        print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
