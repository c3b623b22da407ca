"""Evaluate the growth model against two baselines on a manifest of held-out pairs.

* ``model`` — MT-NoGNet's predicted follow-up image and mask.
* ``copy_baseline`` — the follow-up looks exactly like the baseline (no change).
* ``exponential_baseline`` — the textbook model: with an earlier time point, fit the observed volume
  growth rate ``ln(V_baseline / V_history) / Δt`` and extrapolate it over the interval; realise it by
  scaling the baseline image and mask isotropically about the nodule centroid with a warp
  (:func:`~inference.growth.network.isotropic_scale_ddf`, volume factor clamped to [1/8, 8]). With no
  earlier time point there is no rate to fit and it equals ``copy_baseline``.

Metrics per pair, on the model grid (fixed spacing, HU window → [0, 1]):
``dice`` (masks thresholded at 0.5), ``psnr`` (whole patch, data range 1), ``ssim`` (3-D, whole patch,
data range 1, MONAI's Gaussian-window SSIM, 7-voxel window), ``volume_rel_error`` = |V_pred − V_true| /
V_true from soft mask sums (sub-voxel), ``roi_mse`` (mean squared error within 3 voxels of either
nodule mask). When the follow-up shows no nodule (pattern "resolved"), Dice and relative volume
error are undefined and left out of the summaries (``n_with_nodule`` counts the rest); such pairs
still count for PSNR, SSIM and ROI MSE, and ``predicted_volume_fraction`` (V_pred / V_baseline,
median) shows what each method predicted for them.
Summaries: mean of each metric except ``volume_rel_error`` (median), overall, per growth pattern
(manifest key ``pattern``) and by whether an earlier time point was available.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from monai.metrics import SSIMMetric
from monai.networks.blocks import Warp

from .data import PairCache, collate, read_manifest
from .losses import dilate
from .network import MTNoGNet, exponential_log_ratio, isotropic_scale_ddf

METHODS = ("model", "copy_baseline", "exponential_baseline")
METRICS = ("dice", "psnr", "ssim", "volume_rel_error", "roi_mse")


def exponential_baseline(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted (image, mask) by exponential extrapolation of the observed growth (see module doc)."""
    bm = batch["baseline_mask"]
    lr = exponential_log_ratio(bm.sum(dim=(1, 2, 3, 4)), (batch["history_mask"] * batch["has_history"][:, None, None, None, None]).sum(dim=(1, 2, 3, 4)),
                               batch["days_before"], batch["interval_days"], batch["has_history"])
    ddf = isotropic_scale_ddf(bm, lr)
    warp = Warp(mode="bilinear", padding_mode="border")
    return warp(batch["baseline_image"], ddf).clamp(0, 1), warp(bm, ddf).clamp(0, 1)


def pair_metrics(pred_image: torch.Tensor, pred_mask: torch.Tensor, batch: dict[str, torch.Tensor],
                 ssim: SSIMMetric) -> list[dict[str, float]]:
    """Per-pair metrics for a batch of predictions (see module docstring)."""
    tgt_img, tgt_mask, base_mask = batch["followup_image"], batch["followup_mask"], batch["baseline_mask"]
    mse = ((pred_image - tgt_img) ** 2).mean(dim=(1, 2, 3, 4))
    ssim_v = ssim(pred_image, tgt_img).reshape(-1)
    p_bin, t_bin = pred_mask > 0.5, tgt_mask > 0.5
    inter = (p_bin & t_bin).sum(dim=(1, 2, 3, 4)).float()
    denom = p_bin.sum(dim=(1, 2, 3, 4)).float() + t_bin.sum(dim=(1, 2, 3, 4)).float()
    dice = 2 * inter / denom.clamp(min=1)
    v_pred, v_true = pred_mask.sum(dim=(1, 2, 3, 4)), tgt_mask.sum(dim=(1, 2, 3, 4))
    roi = dilate(torch.maximum(base_mask, tgt_mask), 3) > 0.5
    roi_mse = (((pred_image - tgt_img) ** 2) * roi).sum(dim=(1, 2, 3, 4)) / roi.sum(dim=(1, 2, 3, 4)).clamp(min=1)
    out = []
    for i in range(pred_image.shape[0]):
        present = bool(t_bin[i].any())  # Dice and relative volume error are undefined when the nodule is gone
        out.append({
            "dice": float(dice[i]) if present else None,
            "psnr": float(10 * math.log10(1.0 / max(float(mse[i]), 1e-12))),
            "ssim": float(ssim_v[i]),
            "volume_rel_error": float(abs(v_pred[i] - v_true[i]) / float(v_true[i])) if present else None,
            "roi_mse": float(roi_mse[i]),
            "predicted_volume_fraction": float(v_pred[i] / base_mask[i].sum().clamp(min=1e-6)),
        })
    return out


def summarise(rows: Iterable[dict[str, float | None]]) -> dict[str, float | None]:
    """Means (median for ``volume_rel_error``) over the pairs where each metric is defined."""
    rows = list(rows)
    if not rows:
        return {}
    out: dict[str, float | None] = {"n": len(rows)}
    for m in METRICS:
        vals = np.array([r[m] for r in rows if r[m] is not None], dtype=float)
        if vals.size == 0:
            out[m] = None
        else:
            out[m] = float(np.median(vals)) if m == "volume_rel_error" else float(np.mean(vals))
    out["n_with_nodule"] = sum(1 for r in rows if r["dice"] is not None)
    out["predicted_volume_fraction"] = float(np.median([r["predicted_volume_fraction"] for r in rows]))
    return out


def evaluate_cache(model: MTNoGNet | None, cache: PairCache, batch_size: int = 8, progress: bool = False,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Metrics for every method on prepared pairs; ``model=None`` evaluates only the baselines."""
    from tqdm import tqdm

    ssim = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=7, reduction="none")
    per_pair: list[dict[str, Any]] = []
    idx = list(range(len(cache)))
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    for chunk in tqdm(batches, desc="evaluate growth", unit="batch", disable=not progress):
        batch = collate([cache.get(i) for i in chunk])
        tens = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        preds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
            "copy_baseline": (tens["baseline_image"], tens["baseline_mask"]),
            "exponential_baseline": exponential_baseline(tens),
        }
        if model is not None:
            with torch.no_grad():
                out = model.forward_batch(tens)
            preds["model"] = (out.image, out.mask)
        results = {name: pair_metrics(img, msk, tens, ssim) for name, (img, msk) in preds.items()}
        for j, i in enumerate(chunk):
            per_pair.append({
                "id": batch["id"][j],
                "pattern": batch["pattern"][j],
                "has_history": bool(batch["has_history"][j] > 0),
                **{name: results[name][j] for name in results},
            })
    report: dict[str, Any] = {"pairs": len(per_pair)}
    patterns = sorted({p["pattern"] for p in per_pair})
    for name in [m for m in METHODS if per_pair and m in per_pair[0]]:
        entry = summarise(p[name] for p in per_pair)
        entry["per_pattern"] = {pat: summarise(p[name] for p in per_pair if p["pattern"] == pat) for pat in patterns}
        entry["per_history"] = {
            key: summarise(p[name] for p in per_pair if p["has_history"] == flag)
            for key, flag in (("with_history", True), ("without_history", False))
            if any(p["has_history"] == flag for p in per_pair)
        }
        report[name] = entry
    report["per_pair"] = per_pair
    return report


def evaluate_manifest(manifest: str | Path, weights: str | Path | None, batch_size: int = 8,
                      progress: bool = False) -> dict[str, Any]:
    """Load the model and a manifest, evaluate, and return the report dict (see module docstring)."""
    from .forecast import default_weights_path
    from .train import load_model

    records = read_manifest(manifest)  # bad input fails before the model is loaded
    model, meta = load_model(weights or default_weights_path())
    cache = PairCache(records, model.cfg, progress=progress)
    report = evaluate_cache(model, cache, batch_size=batch_size, progress=progress)
    report["weights"] = str(weights or default_weights_path())
    report["model_version"] = meta.get("version", "")
    report["manifest"] = str(manifest)
    return report


def format_table(report: dict[str, Any]) -> str:
    """Human-readable comparison: overall, then per pattern and by history availability."""
    head = f"{'method':<22}{'group':<24}{'n':>4}{'dice':>8}{'psnr':>8}{'ssim':>8}{'volErr%':>9}{'roiMSE':>10}{'V/V0':>8}"
    lines = [head, "-" * len(head)]

    def row(name: str, group: str, s: dict[str, Any]) -> str:
        dice = f"{s['dice']:>8.3f}" if s["dice"] is not None else f"{'-':>8}"
        vol = f"{100 * s['volume_rel_error']:>9.1f}" if s["volume_rel_error"] is not None else f"{'-':>9}"
        return (f"{name:<22}{group:<24}{int(s['n']):>4}{dice}{s['psnr']:>8.2f}{s['ssim']:>8.4f}"
                f"{vol}{s['roi_mse']:>10.5f}{s['predicted_volume_fraction']:>8.2f}")

    methods = [m for m in METHODS if m in report]
    groups: list[tuple[str, str | None, str | None]] = [("all", None, None)]
    first = report[methods[0]]
    groups += [(f"pattern={p}", "per_pattern", p) for p in first["per_pattern"]]
    groups += [(h, "per_history", h) for h in first["per_history"]]
    for label, section, key in groups:
        for m in methods:
            s = report[m] if section is None else report[m][section].get(key)
            if s:
                lines.append(row(m, label, s))
        lines.append("")
    lines.append("dice/psnr/ssim/roiMSE: mean; volErr%: median relative volume error; V/V0: median predicted/baseline "
                 "volume; '-': undefined (no nodule at follow-up)")
    return "\n".join(lines)
