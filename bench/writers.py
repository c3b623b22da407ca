"""``python -m bench writers``: time and size of the DICOM writers (SEG, TID 1500 SR, key images).

One phantom pair (default: seed 2, 512², 300 slices: four nodules, one of them new) measured from its
label maps (tests/reports_fixtures.py), then each writer runs ``--repeats`` times; the table shows
the median create and save (encode to memory) times, the object size and, for the SEG, the number
of frames. Reference (PEERS.md): highdicom SEG with 3 segments / 52 frames 0.17 s + 0.04 s save,
TID 1500 SR 0.04 s. The machine is shared: read the load average printed with the table.

Usage: ``python -m bench writers [--seed S] [--rows R] [--slices N] [--repeats K]``
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import time


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench writers", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from reports.keyimages import build_key_images
    from reports.seg import build_seg
    from reports.sr import build_sr
    from tests.reports_fixtures import phantom_case

    t0 = time.perf_counter()
    case = phantom_case(args.seed, rows=args.rows, slices=args.slices)
    present = [n for n in case.nodules if n.current is not None]
    print(f"phantom seed {args.seed}, {args.rows}² × {args.slices} slices, {len(present)} nodules "
          f"(generated and measured in {time.perf_counter() - t0:.1f} s)")

    timings: dict[str, list[tuple[float, float]]] = {"SEG": [], "SR": [], "key images": []}
    sizes: dict[str, int] = {}
    frames = 0
    for _ in range(args.repeats):
        t = time.perf_counter()
        seg = build_seg(case.current, case.nodules, model_version="bench")
        t1 = time.perf_counter()
        buf = io.BytesIO()
        seg.dataset.save_as(buf)
        timings["SEG"].append((t1 - t, time.perf_counter() - t1))
        sizes["SEG"], frames = len(buf.getvalue()), int(seg.dataset.NumberOfFrames)

        t = time.perf_counter()
        sr = build_sr(case.current, case.nodules, seg, case.recommendation, model_version="bench",
                      prior_study_date=case.prior.study_date)
        t1 = time.perf_counter()
        buf = io.BytesIO()
        sr.dataset.save_as(buf)
        timings["SR"].append((t1 - t, time.perf_counter() - t1))
        sizes["SR"] = len(buf.getvalue())

        t = time.perf_counter()
        keys = build_key_images(case.prior, case.current, case.nodules, model_version="bench")
        t1 = time.perf_counter()
        total = 0
        for k in keys:
            buf = io.BytesIO()
            k.dataset.save_as(buf)
            total += len(buf.getvalue())
        timings["key images"].append((t1 - t, time.perf_counter() - t1))
        sizes["key images"] = total

    print(f"\n{'object':<12} {'create s':>9} {'save s':>8} {'size kB':>9}  notes")
    for name, runs in timings.items():
        create = statistics.median(r[0] for r in runs)
        save = statistics.median(r[1] for r in runs)
        note = {"SEG": f"{frames} frames, {len(seg.segments)} segments", "SR": f"{2 * len(present)} measurement groups",
                "key images": f"{len(present)} RGB images"}[name]
        print(f"{name:<12} {create:>9.2f} {save:>8.2f} {sizes[name] / 1e3:>9.0f}  {note}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak_mb:.0f} MB; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
