"""``python -m bench funnel``: where the automatic detector loses each nodule, stage by stage.

The detector (:func:`inference.detection.detect_nodules`) is run on each time point of phantom pairs,
alone (no tracking, no propagation from the other time point), and every truth nodule ≥ 5 mm is given
the first stage that loses it:

* ``no candidate`` — no blob maximum near it at all, whatever its shell;
* ``shell test`` — blob maxima near it, all with a shell busier than the limit (the smallest shell
  fraction found is shown; a tube's two caps fill ~20 % at 1.6 radii);
* ``beyond budget`` — it passes the shell test, but ranks past the verification budget (40);
* ``coarse: …`` / ``full: …`` — verified on the ~1.2 mm grid or the full grid and rejected; the
  verdict of :func:`inference.detection.judge_candidate` for its best-ranked candidate
  (``no segmentation``, ``shape: …``, ``vessel: …``, ``wall``, ``ground-glass reading overruled``,
  ``duplicate``);
* ``detected``.

"Near" means the candidate's centre lies on the nodule's label, or within half its diameter + 2 mm of
its centre (a blob maximum of a nodule on a vessel can sit off the nodule). Also counted: the
detector's false positives (a detection on no truth nodule of any size) and every verdict given to
candidates that are not nodules (what each rule removes).

Development seeds only (0–99); the held-out seeds (1000+) are for ``bench measure``.

Usage: ``python -m bench funnel [--seed0 0] [--pairs 10] [--rows 512] [--verbose]``
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
from typing import Any

import numpy as np

MIN_DIAMETER_MM = 5.0  # the size bench measure scores sensitivity at
STAGES = ("no candidate", "shell test", "beyond budget", "coarse", "full", "detected")


def _near(tp: Any, truth_tp: dict[str, Any], k: int, center_mm: Any) -> bool:
    """Is ``center_mm`` on truth nodule ``k`` (label map), or within half its diameter + 2 mm?"""
    from bench.measure import _truth_label

    if _truth_label(tp, truth_tp, k, center_mm):
        return True
    d = float(np.linalg.norm(np.asarray(center_mm, float) - np.asarray(truth_tp["center_mm"], float)))
    return d <= 0.5 * truth_tp["equivalent_diameter_mm"] + 2.0


def funnel_scan(tp: Any, truth_nodules: list[dict[str, Any]], t: int, *,
                budget: int = 40) -> tuple[list[dict[str, Any]], list[str], int]:
    """Run the detector on one time point and place every truth nodule ≥ 5 mm in the funnel.

    Returns (one row per truth nodule, the verdicts given to candidates on no nodule, the number of
    false-positive detections)."""
    from inference.candidates import blob_candidates, priority
    from inference.detection import detect_nodules
    from inference.lung import compute_lung_mask
    from inference.measure import measure

    vol = tp.volume
    lung = compute_lung_mask(vol)
    record: list[tuple[str, Any, str]] = []
    found = detect_nodules(vol, lung, max_candidates=budget, record=record)

    # the candidate stage again, each way only once and only if a nodule was lost before verification
    @functools.cache
    def candidates(which: str) -> list[Any]:
        if which == "anywhere":  # whatever the shell
            return blob_candidates(vol, lung, max_shell_fraction=1.0, blobness=False)
        if which == "passing":  # passing the shell test
            return blob_candidates(vol, lung, blobness=False)
        # ranked as the detector ranks them (cut where no later candidate can enter the budget)
        return sorted(blob_candidates(vol, lung, budget=budget), key=lambda s: -priority(s))

    # a detection is where bench measure would place it: its measured centre
    found_at = [measure(vol, c.segmentation).center_mm for c in found]

    def on(k: int, center: Any) -> bool:
        n = truth_nodules[k - 1]
        return _near(tp, n["timepoints"][t], k, center)

    present = [(k, n) for k, n in enumerate(truth_nodules, start=1)
               if n["timepoints"][t].get("present") and n["timepoints"][t]["equivalent_diameter_mm"] >= MIN_DIAMETER_MM]
    rows = []
    for k, n in present:
        ntp = n["timepoints"][t]
        row = {"nodule": n["id"], "consistency": n["consistency"], "location": n["location"],
               "d_mm": round(float(ntp["equivalent_diameter_mm"]), 1)}
        full = [v for g, s, v in record if g == "full" and on(k, s.center_mm)]
        coarse = [v for g, s, v in record if g == "coarse" and on(k, s.center_mm)]
        if any(on(k, c) for c in found_at):
            row["stage"], row["detail"] = "detected", ""
        elif not coarse:
            near_any = [s for s in candidates("anywhere") if on(k, s.center_mm)]
            if not near_any:
                row["stage"], row["detail"] = "no candidate", ""
            elif not any(on(k, s.center_mm) for s in candidates("passing")):
                row["stage"] = "shell test"
                row["detail"] = f"least shell {min(s.shell_fraction for s in near_any):.2f}"
            else:
                ranked = candidates("ranked")
                ranks = [i for i, s in enumerate(ranked) if on(k, s.center_mm)]
                row["stage"] = "beyond budget"
                row["detail"] = f"rank {min(ranks)}" if ranks else f"rank > {len(ranked)}"
        elif "nodule" not in coarse:
            row["stage"], row["detail"] = "coarse", coarse[0]
        else:
            row["stage"], row["detail"] = "full", full[0] if full else "not re-verified"
        rows.append(row)
    others = [v for g, s, v in record if g == "coarse" and not any(on(k, s.center_mm) for k, _ in present)]
    false_pos = sum(1 for c in found_at if not any(
        _near(tp, m["timepoints"][t], j, c) for j, m in enumerate(truth_nodules, start=1)
        if m["timepoints"][t].get("present")))
    return rows, others, false_pos


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench funnel", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed0", type=int, default=0, help="first development seed (default 0)")
    ap.add_argument("--pairs", type=int, default=10, help="phantom pairs, both time points each (default 10)")
    ap.add_argument("--rows", type=int, default=512, help="phantom matrix (default 512, as bench measure)")
    ap.add_argument("--budget", type=int, default=40, help="verification budget (the detector's default 40)")
    ap.add_argument("--verbose", action="store_true", help="one line per nodule")
    args = ap.parse_args(argv)
    if args.seed0 + args.pairs > 100:
        print("funnel is for development seeds 0–99; held-out seeds are for bench measure", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from inference.phantoms import generate_patient

    rows: list[dict[str, Any]] = []
    others: collections.Counter[str] = collections.Counter()
    false_pos = scans = 0
    for seed in tqdm(range(args.seed0, args.seed0 + args.pairs), desc="phantom pairs", file=sys.stderr):
        patient = generate_patient(seed, timepoints=2, rows=args.rows)
        nodules = patient.truth()["nodules"]
        for t, tp in enumerate(patient.timepoints):
            r, o, fp = funnel_scan(tp, nodules, t, budget=args.budget)
            for row in r:
                row.update(seed=seed, t=t)
                if args.verbose:
                    tqdm.write(f"seed {seed} t{t} {row['nodule']} {row['consistency']:<12} {row['location']:<12} "
                               f"{row['d_mm']:5.1f} mm  {row['stage']}  {row['detail']}", file=sys.stderr)
            rows += r
            others.update(o)
            false_pos += fp
            scans += 1
    print(f"\ndetector funnel: seeds {args.seed0}–{args.seed0 + args.pairs - 1}, {args.rows}², both time points, "
          f"{len(rows)} nodule time points ≥ {MIN_DIAMETER_MM:g} mm")
    print(f"{'stage':<44}{'nodules':>8}   by location")
    by_stage: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        key = row["stage"] if row["stage"] in ("detected", "no candidate", "shell test", "beyond budget") \
            else f"{row['stage']}: {row['detail']}"
        by_stage[key].append(row)
    for key in sorted(by_stage, key=lambda k: (k == "detected", STAGES.index(k.split(":")[0]), k)):
        locs = collections.Counter(r["location"] for r in by_stage[key])
        print(f"{key:<44}{len(by_stage[key]):>8}   " + ", ".join(f"{n} {c}" for c, n in locs.most_common()))
    print(f"\nfalse-positive detections: {false_pos} in {scans} scans ({false_pos / max(scans, 1):.2f} per scan)")
    print(f"{'verdict on candidates that are not nodules':<44}{'count':>8}")
    for verdict, n in others.most_common():
        print(f"{verdict:<44}{n:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
