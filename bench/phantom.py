"""``python -m bench phantom``: how fast the phantom generator makes a CT series and patch pairs.

Generates one time point of a 512² patient with a fixed number of slices (default 300) three times
and prints each stage's median time, the total, slices/s, and the time to write the DICOM files
(reported separately: generation is what the ≤ 5 s target is about). Then times patch-pair mode.
The first, untimed run compiles the numba kernels (cached on disk afterwards).

Usage: ``python -m bench phantom [--rows R] [--slices Z] [--repeats N] [--pairs P] [--seed S]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench phantom", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3, help="series runs (0 = skip the series timing)")
    ap.add_argument("--pairs", type=int, default=40, help="patch pairs to time (0 = skip)")
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args(argv)

    from inference.phantoms import generate_patch_pairs, generate_patient, write_patient

    generate_patient(args.seed, 1, rows=64, slices=16)  # compile / load the kernels
    if args.repeats > 0:
        _series(args, generate_patient, write_patient)
    if args.pairs > 0:
        _pairs(args, generate_patch_pairs)
    return 0


def _series(args: argparse.Namespace, generate_patient, write_patient) -> None:
    runs: list[dict[str, float]] = []
    write_times: list[float] = []
    for r in range(args.repeats):
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        patient = generate_patient(args.seed + r, 1, rows=args.rows, slices=args.slices, timings=stages)
        stages["TOTAL generate"] = time.perf_counter() - t0
        stages["(cpu seconds)"] = time.process_time() - cpu0
        with tempfile.TemporaryDirectory(prefix="bench-phantom-") as tmp:
            t1 = time.perf_counter()
            write_patient(patient, Path(tmp))
            write_times.append(time.perf_counter() - t1)
        runs.append(stages)
        del patient
    names = [k for k in runs[0] if not k.startswith(("TOTAL", "("))] + ["TOTAL generate", "(cpu seconds)"]
    print(f"phantom generator: {args.slices} slices × {args.rows}², 1 time point, median of {args.repeats} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
    print(f"{'stage':<26}{'median s':>10}{'min s':>10}")
    for name in names:
        vals = [run.get(name, 0.0) for run in runs]
        print(f"{name:<26}{statistics.median(vals):>10.3f}{min(vals):>10.3f}")
    total = statistics.median(run["TOTAL generate"] for run in runs)
    print(f"{'slices/s (generate)':<26}{args.slices / total:>10.1f}")
    print(f"{'write DICOM (s)':<26}{statistics.median(write_times):>10.3f}{min(write_times):>10.3f}")
    print(f"target: ≤ 5 s per 300-slice 512² series -> {'met' if total <= 5.0 else 'NOT met'} (median {total:.2f} s)")


def _pairs(args: argparse.Namespace, generate_patch_pairs) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-patches-") as tmp:
        generate_patch_pairs(Path(tmp) / "warm", 2, args.seed)
        for workers in (1, 2):
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            generate_patch_pairs(Path(tmp) / f"w{workers}", args.pairs, args.seed, workers=workers)
            dt = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            print(f"patch pairs (64³, 1 mm), workers={workers}: {args.pairs} pairs in {dt:.1f} s wall = "
                  f"{args.pairs / dt:.1f} pairs/s (~{1000 * dt / args.pairs / 60:.1f} min per 1000); "
                  f"parent cpu {cpu:.1f} s")  # fmt: skip
