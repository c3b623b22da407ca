"""``noduletrack train growth``: train the MT-NoGNet growth model on a manifest of nodule pairs.

Seeded and resumable (``--resume`` continues from ``OUT/checkpoint.pt`` exactly where an interrupted
run stopped), with a progress bar and checkpoints; CPU or CUDA (CUDA when available unless
``--device`` says otherwise). Writes ``OUT/weights.pt`` and ``OUT/metrics.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from typing import Any

from dicom_node.config import Config
from dicom_node.logs import log_event

log = logging.getLogger("noduletrack.train")


def register(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "train",
        parents=[parent],
        help="train a model (target: growth)",
        description="Train a NoduleTrack model. Target 'growth': the MT-NoGNet nodule growth model.",
    )
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    g = targets.add_parser(
        "growth",
        parents=[parent],
        help="train the MT-NoGNet growth model on a pair manifest",
        description=(
            "Train MT-NoGNet on a growth manifest (JSON lines: id, baseline_image, baseline_mask, followup_image, "
            "followup_mask, interval_days, optional history; NIfTI or MetaImage in HU, any spacing). Writes "
            "OUT/checkpoint.pt every --checkpoint-every steps, and OUT/weights.pt + OUT/metrics.json at the end."
        ),
        epilog="Example: noduletrack train growth --manifest pairs/manifest.jsonl --out runs/g1 --steps 3000 --seed 0",
    )
    g.add_argument("--manifest", required=True, metavar="FILE", help="training manifest (JSON lines)")
    g.add_argument("--out", required=True, metavar="DIR", help="output folder for checkpoint, weights and metrics")
    g.add_argument("--steps", type=int, default=3000, help="optimisation steps (default 3000)")
    g.add_argument("--batch-size", type=int, default=4, help="pairs per step (default 4; >= 2 avoids a slow CPU path)")
    g.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--patch", type=int, default=48, help="patch size in voxels per side (default 48)")
    g.add_argument("--spacing", type=float, default=1.0, help="model grid spacing in mm (default 1.0)")
    g.add_argument("--channels", type=int, default=12, help="base channel count (default 12)")
    g.add_argument("--checkpoint-every", type=int, default=100, metavar="N", help="checkpoint every N steps")
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if present")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    from inference.growth.data import GrowthConfig, ManifestError
    from inference.growth.train import TrainOptions, train

    try:
        opts = TrainOptions(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            checkpoint_every=args.checkpoint_every, threads=args.threads,
            config=GrowthConfig(patch=args.patch, spacing_mm=args.spacing, base_channels=args.channels),
        )
    except ValueError as exc:
        print(f"noduletrack train growth: {exc}", file=sys.stderr)
        return 2
    try:
        metrics = train(args.manifest, args.out, opts, resume=args.resume, device=args.device,
                        progress=not args.no_progress)
    except ManifestError as exc:
        print(f"noduletrack train growth: bad manifest: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. resume with different options, cuda requested but absent
        print(f"noduletrack train growth: {exc}", file=sys.stderr)
        return 2
    last = metrics["history"][-1] if metrics["history"] else {}
    log_event(log, "train.done", out=args.out, steps=metrics["step"], seconds=metrics["train_seconds"],
              loss=last.get("total"), dice_loss=last.get("dice"))
    print(f"trained {metrics['step']} steps in {metrics['train_seconds']:.0f} s on {metrics['pairs']} pairs; "
          f"weights: {args.out}/weights.pt, metrics: {args.out}/metrics.json")
    return 0
