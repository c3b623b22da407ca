"""``python -m bench matchdiag``: why prior–current matching and VDT fail, per nodule, on phantom pairs.

For every nodule present at both time points (≥ 5 mm at either, as ``bench measure`` scores
matching) the reported tracked nodules are assigned to truth labels per time point (the same rule as
``bench measure``) and the outcome is classified:

* ``ok`` — one tracked nodule holds the right prior and current, and none holds only one of them;
* ``missed_both`` — no reported nodule at either time point (detection; nothing to track);
* ``prior_missing`` / ``current_missing`` — found at one time point only: neither the detector nor
  the propagation from the other time point recovered it (``detected`` says whether the detector had
  it before tracking, i.e. a propagation landed elsewhere or the pair was lost);
* ``split`` — found at both, in two tracked nodules (one new, one resolved: the match failed);
* ``wrong_pair`` — found at both, each paired with something else (another nodule or a false one);
* ``extra_fragment`` — the right pair exists, but another tracked nodule holds one side too.

Each row also gives the global registration error at the nodule (mapped prior centroid vs the true
mapping, from the phantom's poses) and the centroid shift due to growth, and for growing nodules
(≥ 25 %) whether the VDT is within 15 % (``vdt``: ``ok`` / ``vol_err`` / ``no_pair`` / ``no_vdt``).

``--perturb-mm D`` / ``--perturb-deg A`` add a known error to the global registration (a translation of
D mm, or a rotation of A° about the current volume's centre, in a random direction per seed): a stress
test of the local refinement and propagation, since the phantom's rigid poses are registered almost
exactly while real chests (breathing, posture) leave local residuals of 10 mm and more.

Development seeds only (0–99); the held-out seeds (1000+) are for ``bench measure``.

Usage: ``python -m bench matchdiag [--seed0 0] [--pairs 20] [--rows 256] [--all] [--perturb-mm D] [--perturb-deg A]``
"""

from __future__ import annotations

import argparse
import collections
import gc
import math
import sys
from typing import Any

import numpy as np


def classify_match(prior_holders: set[int], current_holders: set[int], assign_prior: dict[int, int],
                   assign_current: dict[int, int], detected_prior: bool, detected_current: bool) -> str:
    """Outcome of one truth nodule.

    ``prior_holders`` / ``current_holders``: indices of the tracked nodules whose prior / current
    measurement lies on this truth nodule; ``assign_*``: truth label (0 = none) of every tracked
    nodule's prior / current measurement (absent when that side is None); ``detected_*``: whether
    the detector (before tracking) had the nodule at that time point.
    """
    pair = prior_holders & current_holders
    # a tracked nodule holding one side of this nodule and, on the other side, something else
    # (another nodule or a false detection) — what bench.measure counts as wrong
    wrong = {i for i in prior_holders ^ current_holders if i in assign_prior and i in assign_current
             and assign_prior[i] and assign_current[i]}
    half = {i for i in prior_holders ^ current_holders if i in assign_prior and i in assign_current}
    if pair:
        return "ok" if not wrong else "extra_fragment"
    if not prior_holders and not current_holders:
        return "missed_both"
    if not prior_holders:
        return "prior_missing:" + ("detected" if detected_prior else "not_detected")
    if not current_holders:
        return "current_missing:" + ("detected" if detected_current else "not_detected")
    return "wrong_pair" if half else "split"


def vdt_outcome(v0: float, v1: float, interval: int, est_vdt: float | None, paired: bool) -> tuple[str, float | None]:
    """VDT outcome of a nodule whose true volume grew ≥ 25 % (None otherwise)."""
    vdt_true = interval * math.log(2) / math.log(v1 / v0)
    if not paired:
        return "no_pair", None
    if est_vdt is None:
        return "no_vdt", None
    e = (est_vdt - vdt_true) / vdt_true
    return ("ok" if abs(e) <= 0.15 else "vol_err"), e


def perturbed(transform: Any, center_mm: np.ndarray, shift_mm: float, deg: float, seed: int) -> Any:
    """``transform`` (current → prior) with a known error: ``shift_mm`` translation and ``deg`` rotation
    about ``center_mm`` (current LPS), each about a direction drawn from ``seed``."""
    from scipy.spatial.transform import Rotation

    from inference.registration import RigidTransform

    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=3), rng.normal(size=3)
    err = np.eye(4)
    err[:3, :3] = Rotation.from_rotvec(np.radians(deg) * v / np.linalg.norm(v)).as_matrix()
    err[:3, 3] = center_mm - err[:3, :3] @ center_mm + shift_mm * u / np.linalg.norm(u)
    return RigidTransform(transform.current_to_prior @ err, transform.metric)


def diagnose_pair(seed: int, rows: int = 256, perturb_mm: float = 0.0, perturb_deg: float = 0.0) -> list[dict[str, Any]]:
    """Analyse one phantom pair and classify every nodule present at both time points."""
    from bench.measure import _truth_label
    from inference import analysis as A
    from inference.phantoms import generate_patient

    patient = generate_patient(seed, timepoints=2, rows=rows)
    captured: dict[str, Any] = {}
    orig_track = A._track

    def track(*args, **kwargs):  # record what the detector found before tracking
        captured["prior_found"], captured["cur_found"] = args[5], args[6]
        return orig_track(*args, **kwargs)

    orig_register = A.register_rigid

    def register(prior, current):
        t = orig_register(prior, current)
        centre = current.geometry.index_to_lps((np.asarray(current.hu.shape) - 1) / 2.0)
        return perturbed(t, centre, perturb_mm, perturb_deg, seed)

    A._track = track
    if perturb_mm or perturb_deg:
        A.register_rigid = register
    try:
        res = A.analyze_pair(patient.timepoints[0].volume, patient.timepoints[1].volume)
    finally:
        A._track = orig_track
        A.register_rigid = orig_register
    truth = patient.truth()
    nods = truth["nodules"]
    tps = patient.timepoints

    def label(t: int, center) -> int:
        for j, n in enumerate(nods, start=1):
            if _truth_label(tps[t], n["timepoints"][t], j, center):
                return j
        return 0

    poses = [np.asarray(tp["anatomy_to_patient"], float) for tp in truth["timepoints"]]
    true_map = poses[1] @ np.linalg.inv(poses[0])
    interval = tps[1].days_from_baseline - tps[0].days_from_baseline
    tr = res.nodules
    ap = {i: label(0, t.prior.center_mm) for i, t in enumerate(tr) if t.prior is not None}
    ac = {i: label(1, t.current.center_mm) for i, t in enumerate(tr) if t.current is not None}
    det_p = {label(0, f.meas.center_mm) for f in captured.get("prior_found", [])}
    det_c = {label(1, f.meas.center_mm) for f in captured.get("cur_found", [])}
    out = []
    for j, n in enumerate(nods, start=1):
        t0, t1 = n["timepoints"]
        if not (t0["present"] and t1["present"]):
            continue
        if max(t0["equivalent_diameter_mm"], t1["equivalent_diameter_mm"]) < 5.0:
            continue
        c0, c1 = np.asarray(t0["center_mm"]), np.asarray(t1["center_mm"])
        c0_true = c0 @ true_map[:3, :3].T + true_map[:3, 3]
        ph = {i for i, k in ap.items() if k == j}
        ch = {i for i, k in ac.items() if k == j}
        row: dict[str, Any] = {
            "seed": seed, "nodule": n["id"], "pattern": n["pattern"], "location": n["location"],
            "consistency": n["consistency"], "d0": round(t0["equivalent_diameter_mm"], 1),
            "d1": round(t1["equivalent_diameter_mm"], 1),
            "reg_err_mm": round(float(np.linalg.norm(res.transform.to_current(c0) - c0_true)), 2),
            "growth_shift_mm": round(float(np.linalg.norm(c0_true - c1)), 2),
            "match": classify_match(ph, ch, ap, ac, j in det_p, j in det_c),
        }
        pair = sorted(ph & ch)
        if pair:
            t = tr[pair[0]]
            row["vol_err0"] = round((t.prior.volume_mm3 - t0["volume_mm3"]) / t0["volume_mm3"], 3)
            row["vol_err1"] = round((t.current.volume_mm3 - t1["volume_mm3"]) / t1["volume_mm3"], 3)
        if t1["volume_mm3"] >= 1.25 * t0["volume_mm3"] and interval > 0:
            est = tr[pair[0]].vdt_days if pair else None
            row["vdt"], e = vdt_outcome(t0["volume_mm3"], t1["volume_mm3"], interval, est, bool(pair))
            if e is not None:
                row["vdt_err"] = round(e, 3)
        out.append(row)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench matchdiag", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--all", action="store_true", help="print every nodule, not only the failures")
    ap.add_argument("--perturb-mm", type=float, default=0.0, help="translation error added to the registration")
    ap.add_argument("--perturb-deg", type=float, default=0.0, help="rotation error added to the registration")
    args = ap.parse_args(argv)
    if args.seed0 + args.pairs > 100:
        print("matchdiag is for development seeds 0–99 only", file=sys.stderr)
        return 2
    rows = []
    for seed in range(args.seed0, args.seed0 + args.pairs):
        for r in diagnose_pair(seed, args.rows, args.perturb_mm, args.perturb_deg):
            rows.append(r)
            if args.all or r["match"] != "ok" or r.get("vdt", "ok") != "ok":
                print(r, flush=True)
        gc.collect()
    match = collections.Counter(r["match"].split(":")[0] for r in rows)
    vdt = collections.Counter(r["vdt"] for r in rows if "vdt" in r)
    print(f"\nmatching: {match['ok']}/{len(rows)} ok; causes: {dict(match)}")
    print(f"VDT (growth ≥ 25 %): {vdt['ok']}/{sum(vdt.values())} within 15 %; causes: {dict(vdt)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
