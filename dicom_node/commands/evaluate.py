"""``noduletrack evaluate growth``: compare the growth model with copy-baseline and exponential growth.

Prints a table (or ``--json``: keys ``model``, ``copy_baseline``, ``exponential_baseline``, each with
``dice``, ``psnr``, ``ssim``, ``volume_rel_error`` (median), ``roi_mse``, ``per_pattern`` and
``per_history``; plus ``per_pair``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from dicom_node.config import Config
from dicom_node.logs import log_event

log = logging.getLogger("noduletrack.evaluate")


def register(subparsers: Any, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "evaluate",
        parents=[parent],
        help="evaluate a model (target: growth)",
        description="Evaluate a NoduleTrack model on held-out data. Target 'growth': MT-NoGNet vs baselines.",
    )
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    g = targets.add_parser(
        "growth",
        parents=[parent],
        help="MT-NoGNet vs copy-baseline and exponential extrapolation on a pair manifest",
        description=(
            "Evaluate the growth model on a manifest of held-out pairs (same format as training) against copying "
            "the baseline and exponential extrapolation of the observed growth (equal to copying when a pair has "
            "no earlier time point). Metrics on the model grid, HU window [-1000, 400] -> [0, 1]: Dice, PSNR and "
            "3-D SSIM over the whole patch, median relative volume error, MSE near the nodule; overall, per growth "
            "pattern (manifest key 'pattern') and by history availability."
        ),
        epilog="Example: noduletrack evaluate growth --manifest heldout/manifest.jsonl --json",
    )
    g.add_argument("--manifest", required=True, metavar="FILE", help="evaluation manifest (JSON lines)")
    g.add_argument("--weights", metavar="FILE", help="model weights (default: the shipped weights)")
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.add_argument("--per-pair", action="store_true", help="with --json: include every pair's metrics")
    g.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass (default 8)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    import torch

    from inference.growth.data import ManifestError
    from inference.growth.evaluate import evaluate_manifest, format_table

    torch.set_num_threads(2)
    if args.batch_size < 1:
        print("noduletrack evaluate growth: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        report = evaluate_manifest(args.manifest, args.weights, batch_size=args.batch_size,
                                   progress=not args.no_progress and not args.json)
    except ManifestError as exc:
        print(f"noduletrack evaluate growth: bad manifest: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"noduletrack evaluate growth: {exc}", file=sys.stderr)
        return 2
    log_event(log, "evaluate.done", pairs=report["pairs"], dice=round(report["model"]["dice"], 4),
              copy_dice=round(report["copy_baseline"]["dice"], 4))
    if args.json:
        if not args.per_pair:
            report.pop("per_pair", None)
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['pairs']} pairs from {report['manifest']}; weights {report['weights']}")
        print(format_table(report))
    return 0
