"""``noduletrack phantom``: write synthetic chest-CT patients (DICOM + truth.json), or growth pairs.

Patient mode: each patient gets ``OUT/PT<seed>/T0/CT000001.dcm``… (one CT series per time point) and
a ``truth.json`` with every nodule's centre, volume, diameters and consistency per time point.
Patient ``i`` uses seed ``S + i``, so any single patient can be regenerated on its own.

Patch mode (``--patches N``): N growth-model training pairs as NIfTI patches plus
``OUT/manifest.jsonl`` in the DESIGN.md growth-data format.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from dicom_node.config import Config
from dicom_node.logs import log_event, phi_hash

log = logging.getLogger("noduletrack.phantom")


def register(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "phantom",
        parents=[parent],
        help="write synthetic chest-CT patients with known nodules (DICOM + truth.json)",
        description=textwrap.fill(
            "Write synthetic chest-CT studies: anatomy, correlated noise, partial-volume edges and nodules of "
            "known size, consistency (solid, part-solid, ground-glass), margin (smooth, lobulated, spiculated) "
            "and location (central, juxtapleural, perivascular), followed over --timepoints studies with known "
            "growth (exponential by volume doubling time, stable, shrinking, ground-glass gaining a solid part, "
            "new, resolved), a small repositioning and new FrameOfReferenceUID per study, and full DICOM "
            "headers. Patient i uses seed S+i and is written to OUT/PT<seed>/T<k>/CT*.dcm with OUT/PT<seed>/"
            "truth.json. Deterministic: the same seed writes byte-identical files.",
            width=100,
        ),
        epilog=(
            textwrap.fill(
                "Patch mode (--patches N) writes N growth-model training pairs instead: baseline and follow-up "
            "(and for about half, an earlier) patch of one nodule as HU NIfTI + mask NIfTI under OUT/patches/, "
            "listed in OUT/manifest.jsonl as {id, baseline_image, baseline_mask, followup_image, followup_mask, "
                "interval_days, history, pattern, consistency, margin, vdt_days, ...}; paths relative to OUT.",
                width=100,
            )
            + "\n\n"
            "Examples:\n"
            "  noduletrack phantom --out var/phantoms --patients 3 --seed 100\n"
            "  noduletrack phantom --out /tmp/small --patients 1 --seed 7 --timepoints 3 --rows 256\n"
            "  noduletrack phantom --out var/pairs --patches 2000 --seed 1 --workers 2\n\n"
            "Exit codes: 0 written; 2 bad arguments or output directory; 1 generation failed."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--patients", type=int, default=1, metavar="N", help="number of patients (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the first patient (default 0)")
    p.add_argument("--timepoints", type=int, default=2, metavar="K", help="CT studies per patient (default 2)")
    p.add_argument("--rows", type=int, default=512, metavar="R", help="image matrix R×R (default 512; smaller = larger pixels)")
    p.add_argument("--slices", type=int, default=None, metavar="Z", help="fix the number of slices (default: from a drawn slice thickness)")
    p.add_argument("--nodules", default="1-4", metavar="LO-HI", help="nodules per patient, a range (default 1-4)")
    g = p.add_argument_group("patch mode (growth-model training pairs)")
    g.add_argument("--patches", type=int, default=None, metavar="N", help="write N training pairs instead of patients")
    g.add_argument("--patch-size", type=int, default=64, metavar="P", help="patch edge in voxels (default 64)")
    g.add_argument("--spacing", type=float, default=1.0, metavar="MM", help="isotropic patch spacing in mm (default 1.0)")
    g.add_argument("--vary-spacing", action="store_true", help="draw an anisotropic spacing per pair instead")
    g.add_argument("--workers", type=int, default=1, metavar="W", help="processes rendering pairs (default 1)")
    p.set_defaults(func=run)


def _parse_range(text: str) -> tuple[int, int]:
    parts = text.split("-")
    if len(parts) == 1:
        n = int(parts[0])
        return n, n
    if len(parts) != 2:
        raise ValueError(text)
    return int(parts[0]), int(parts[1])


def run(args: argparse.Namespace, config: Config) -> int:
    from tqdm import tqdm

    from inference.phantoms import generate_patient, write_patient

    try:
        n_nodules = _parse_range(args.nodules)
    except ValueError:
        print(f"noduletrack phantom: --nodules must be N or LO-HI, got {args.nodules!r}", file=sys.stderr)
        return 2
    problems = []
    if args.patients < 1:
        problems.append(f"--patients must be at least 1, got {args.patients}")
    if args.seed < 0:
        problems.append(f"--seed must be non-negative, got {args.seed}")
    if not 1 <= args.timepoints <= 12:
        problems.append(f"--timepoints must be between 1 and 12, got {args.timepoints}")
    if not 32 <= args.rows <= 2048:
        problems.append(f"--rows must be between 32 and 2048, got {args.rows}")
    if not 0 <= n_nodules[0] <= n_nodules[1] <= 8:
        problems.append(f"--nodules must be a range within 0-8, got {args.nodules!r}")
    if args.slices is not None and not 8 <= args.slices <= 2000:
        problems.append(f"--slices must be between 8 and 2000, got {args.slices}")
    if args.patches is not None:
        if args.patches < 1:
            problems.append(f"--patches must be at least 1, got {args.patches}")
        if not 16 <= args.patch_size <= 256:
            problems.append(f"--patch-size must be between 16 and 256, got {args.patch_size}")
        if not 0.2 <= args.spacing <= 5.0:
            problems.append(f"--spacing must be between 0.2 and 5 mm, got {args.spacing}")
        if args.workers < 1:
            problems.append(f"--workers must be at least 1, got {args.workers}")
    if problems:
        for line in problems:
            print(f"noduletrack phantom: {line}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"noduletrack phantom: cannot create output directory {out}: {exc}", file=sys.stderr)
        return 2
    if args.patches is not None:
        return _run_patches(args, out)
    lines = []
    t0 = time.perf_counter()
    for i in tqdm(range(args.patients), desc="phantom patients", unit="patient", disable=None):
        seed = args.seed + i
        patient = generate_patient(
            seed, args.timepoints, rows=args.rows, n_nodules=n_nodules, slices=args.slices
        )
        root = write_patient(patient, out)
        log_event(
            log, "phantom_written", patient=phi_hash(patient.patient_id), seed=seed,
            studies=len(patient.timepoints), nodules=len(patient.nodules),
        )  # fmt: skip
        lines.append(_summary(root, patient))
    for line in lines:
        print(line)
    print(f"{args.patients} patient(s) in {time.perf_counter() - t0:.1f} s under {out}")
    return 0


def _run_patches(args: argparse.Namespace, out: Path) -> int:
    import json
    from collections import Counter

    from inference.phantoms import generate_patch_pairs

    t0 = time.perf_counter()
    manifest = generate_patch_pairs(
        out, args.patches, args.seed, patch_size=args.patch_size, spacing_mm=args.spacing,
        vary_spacing=args.vary_spacing, workers=args.workers, progress=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    log_event(log, "phantom_patches_written", pairs=len(rows), seed=args.seed, manifest=str(manifest))
    patterns = Counter(r["pattern"] for r in rows)
    with_history = sum(1 for r in rows if r.get("history"))
    print(f"{manifest}: {len(rows)} pairs ({with_history} with an earlier time point) in {time.perf_counter() - t0:.1f} s")
    print("patterns: " + ", ".join(f"{k} {v}" for k, v in sorted(patterns.items())))
    return 0


def _summary(root: Path, patient: Any) -> str:
    """``DIR  k studies  N1 8.1mm solid growing VDT 300d; ...`` (size = mean diameter at first sight)."""
    parts = []
    for nod in patient.nodules:
        first = next(tp for tp in nod.timepoints if tp["present"])
        vdt = f" VDT {nod.vdt_days:.0f}d" if nod.vdt_days else ""
        parts.append(f"{nod.id} {first['mean_diameter_mm']:.1f}mm {nod.consistency} {nod.margin} {nod.location} {nod.pattern}{vdt}")
    studies = ", ".join(
        f"{tp.dir_name} day {tp.days_from_baseline} {tp.volume.hu.shape[0]}×{tp.slice_thickness_mm:g}mm"
        for tp in patient.timepoints
    )
    return f"{root}  [{studies}]  " + ("; ".join(parts) if parts else "no nodules")
