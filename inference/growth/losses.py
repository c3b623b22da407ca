"""MT-NoGNet training loss: region-focused image term, Dice on the warped mask, flow smoothness.

Why these terms and weights (chosen here; the paper leaves them open):

* **Image** — mean squared error (what PSNR measures) weighted by ``1 + roi_weight·R`` where ``R``
  is the union of the baseline and follow-up nodule masks dilated by ``roi_margin`` voxels. Most of
  a patch is lung that does not change between scans except for noise; without the weight the
  nodule's few hundred voxels are drowned by tens of thousands of background voxels.
* **Dice** on the warped baseline mask against the follow-up mask (:class:`monai.losses.DiceLoss`):
  the volume/shape term, scale-free, so small and large nodules count alike. Pairs whose follow-up
  has no nodule (resolved) have no defined Dice and only contribute the image term.
* **Smoothness** — :class:`monai.losses.BendingEnergyLoss` on the network's displacement field (at
  its own working resolution: the up-sampled field and the analytic exponential prior add nothing
  to penalise, and it is 8× cheaper), so that
  expansion is a plausible deformation rather than tearing, plus an L1 penalty on the texture
  residual so that growth is explained by the warp and density change by the texture branch (the
  multi-task split the paper argues for). Its weight (2.0) makes the branch pay for a change: the
  image term's gradient per voxel in the nodule region is ~20·2·10/1.45 ≈ 276 per unit of error,
  so a density change must be worth ~0.007 (≈10 HU) of *expected* error before it is made. At 0.02
  the penalty was negligible and the branch made small unreliable changes that cost PSNR on
  validation (MODEL_CARD.md).
* **Deep supervision** — the quarter-resolution deformation head's field (up-sampled) warps the
  baseline mask, scored with Dice and smoothness at weight ``aux_weight`` (the image term is left out
  there: one more full-resolution warp per step for little gain on a CPU budget).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.losses import BendingEnergyLoss, DiceLoss

from .network import GrowthOutput, dilate  # dilate re-exported for evaluate.py


@dataclass(frozen=True)
class LossWeights:
    image: float = 20.0  # MSE in [0,1]² units is ~1e-3 in the nodule region: scale it to Dice's range
    dice: float = 1.0
    smooth: float = 0.1
    residual_l1: float = 2.0  # a density change must be worth ~10 HU of expected error (module docstring)
    roi_weight: float = 9.0  # nodule region counts 10× the rest of the patch
    roi_margin: int = 3
    aux_weight: float = 0.4

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def roi_weight_map(baseline_mask: torch.Tensor, followup_mask: torch.Tensor, weight: float, margin: int) -> torch.Tensor:
    """``1 + weight`` inside the dilated union of the nodule masks, 1 elsewhere."""
    return 1.0 + weight * dilate(torch.maximum(baseline_mask, followup_mask), margin)


class GrowthLoss(torch.nn.Module):
    """Total loss and its parts (see module docstring)."""

    def __init__(self, weights: LossWeights | None = None) -> None:
        super().__init__()
        self.w = weights or LossWeights()
        self.dice = DiceLoss(sigmoid=False, softmax=False, smooth_nr=1e-3, smooth_dr=1e-3, reduction="none")
        self.bending = BendingEnergyLoss(normalize=False)

    def _dice(self, mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        """Mean Dice loss over the samples whose follow-up shows a nodule (undefined when it is gone)."""
        target = (target_mask > 0.5).float()
        per = self.dice(mask, target).reshape(mask.shape[0])
        present = (target.sum(dim=(1, 2, 3, 4)) > 0).float()
        return (per * present).sum() / present.sum().clamp(min=1.0)

    def _terms(self, image: torch.Tensor, mask: torch.Tensor, flow: torch.Tensor, residual: torch.Tensor | None,
               target_image: torch.Tensor, target_mask: torch.Tensor, weight_map: torch.Tensor) -> dict[str, torch.Tensor]:
        img = ((image - target_image) ** 2 * weight_map).sum() / weight_map.sum()
        terms = {
            "image": img,
            "dice": self._dice(mask, target_mask),
            "smooth": self.bending(flow),
        }
        if residual is not None:
            terms["residual_l1"] = residual.abs().mean()
        return terms

    def forward(self, out: GrowthOutput, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.w
        wmap = roi_weight_map(batch["baseline_mask"], batch["followup_mask"], w.roi_weight, w.roi_margin)
        flow = out.flow if out.flow is not None else out.ddf
        main = self._terms(out.image, out.mask, flow, out.residual, batch["followup_image"], batch["followup_mask"], wmap)
        total = w.image * main["image"] + w.dice * main["dice"] + w.smooth * main["smooth"] + w.residual_l1 * main["residual_l1"]
        parts = {k: float(v.detach()) for k, v in main.items()}
        if out.aux_mask is not None and out.aux_flow is not None:
            aux = {"dice": self._dice(out.aux_mask, batch["followup_mask"]), "smooth": self.bending(out.aux_flow)}
            total = total + w.aux_weight * (w.dice * aux["dice"] + w.smooth * aux["smooth"])
            parts.update({f"aux_{k}": float(v.detach()) for k, v in aux.items()})
        parts["total"] = float(total.detach())
        return total, parts
