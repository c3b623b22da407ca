"""MT-NoGNet: a multi-task nodule growth network (Zhao et al., Front. Oncol. 2026), small enough for a CPU.

Inputs (one patch per nodule, model grid of :class:`~inference.growth.data.GrowthConfig`):
baseline image + mask, optionally an earlier time point's image + mask with a presence flag, the
forecast interval in days and (when there is history) how many days before baseline it was taken.

* **Shared 3-D encoder** (MONAI ``Convolution`` blocks, 3 stride-2 stages: 1/2, 1/4, 1/8) over all
  input channels; decoders work up to 1/2 resolution and their fields are up-sampled (smooth by nature).
* **Conditioning**: a continuous embedding of the interval (sinusoids of log-days → MLP; never
  fixed classes), of the history gap, and of the *observed* log-volume growth extrapolated to the
  interval (the exponential model); it modulates both decoders (FiLM / adaptive instance norm).
* **Region focus**: displacements and the texture residual are multiplied by a smooth window around
  the nodule (room to double in diameter), so the lung around it stays as the baseline showed it.
* **Deformation decoder** → displacement field (voxels) → spatial transformer
  (:class:`monai.networks.blocks.Warp`) warping the baseline image and mask (volume change). When
  there is history, the field is a residual on the isotropic exponential-growth field about the
  nodule centroid, so the network learns corrections to the textbook model instead of rediscovering
  it (beyond the paper; with no history the prior field is zero and the model still works).
* **Texture decoder** with adaptive instance normalisation conditioned on the interval → a residual
  added to the warped image (density change: a ground-glass nodule developing a solid part). The
  residual is confined to the nodule: the union of the baseline and the warped mask, dilated by
  ``GrowthConfig.residual_margin`` voxels with a soft edge (:func:`texture_region`). Density changes
  where the nodule is or was; a residual free to act on the whole growth window added smooth errors
  to unchanged lung and cost PSNR/SSIM against simply copying the baseline.
* **Cross-task attention**: token attention between the two decoders at the bottleneck and gated
  feature exchange at every up-sampling level, so expansion and density change stay consistent.
* **Deep supervision**: a quarter-resolution deformation head whose field (up-sampled) warps the
  baseline mask, scored by Dice and smoothness with a lower weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, Warp
from torch import nn

from .data import GrowthConfig

# log-volume ratio clamp for the exponential prior: at most ×8 or ÷8 in volume (×2 in diameter)
MAX_LOG_RATIO = math.log(8.0)


def sinusoidal_days(days: torch.Tensor, dim: int) -> torch.Tensor:
    """Continuous embedding of a day count: sin/cos of log(1 + days) at geometric frequencies."""
    x = torch.log1p(days.clamp(min=0.0)).unsqueeze(-1) / math.log1p(3650.0)  # ~[0, 1] for 0..10 y
    freqs = torch.exp(torch.linspace(0.0, math.log(64.0), dim // 2, device=days.device))
    ang = x * freqs * math.pi
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


def exponential_log_ratio(
    v_base: torch.Tensor, v_hist: torch.Tensor, days_before: torch.Tensor, interval: torch.Tensor, has_hist: torch.Tensor
) -> torch.Tensor:
    """Extrapolated ``log(V_followup / V_baseline)`` under exponential growth.

    Volumes are in voxels. Zero (no change) without history, and when either time point shows less
    than one voxel of nodule: a nodule that was absent before ("new") has no growth *rate* to fit.
    """
    usable = has_hist * (v_hist >= 1.0).to(v_base.dtype) * (v_base >= 1.0).to(v_base.dtype)
    rate = torch.log(v_base.clamp(min=1.0) / v_hist.clamp(min=1.0)) / days_before.clamp(min=1.0)
    return (rate * interval * usable).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


def _centre_radius(mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Mask centroid ``(B, 3)`` (array centre when empty), per-axis offsets from it (``(B, n_axis)``
    each) and the distance map ``(B, 1, D, H, W)``, all in voxels.

    Computed separably (marginal sums, broadcast squares): no full-size coordinate grids, which made
    the window and the exponential prior a quarter of a forward pass.
    """
    b, _, *size = mask.shape
    total = mask.sum(dim=(1, 2, 3, 4))
    axes = [torch.arange(n, dtype=mask.dtype, device=mask.device) for n in size]
    dims = (2, 3, 4)
    centre = torch.stack(
        [(mask.sum(dim=tuple(d for d in dims if d != dims[i])).reshape(b, -1) * axes[i]).sum(dim=1) for i in range(3)], dim=1
    ) / total.clamp(min=1e-6)[:, None]
    middle = torch.tensor([(n - 1) / 2 for n in size], dtype=mask.dtype, device=mask.device)
    centre = torch.where((total <= 0)[:, None], middle, centre)
    offs = [axes[i][None] - centre[:, i : i + 1] for i in range(3)]
    r2 = offs[0][:, None, :, None, None] ** 2 + offs[1][:, None, None, :, None] ** 2 + offs[2][:, None, None, None, :] ** 2
    return centre, offs, torch.sqrt(r2)


def nodule_window(mask: torch.Tensor, room: float | torch.Tensor = 2.0, margin: float = 3.0, taper: float = 8.0,
                  radius: torch.Tensor | None = None) -> torch.Tensor:
    """Smooth window ``(B, 1, D, H, W)``: 1 around the nodule, falling to 0 in the lung beyond it.

    Inside ``room`` × the nodule's largest centroid distance + ``margin`` voxels (space to double in
    diameter, spicules included) the window is 1; over the next ``taper`` voxels it falls to 0 with a
    raised cosine. Growth is local: multiplying displacements and density change by this window keeps
    the rest of the patch (vessels, chest wall, texture) exactly where the baseline had it, which a
    patch-wide field would shift. ``radius``: the mask's distance map if already computed.
    """
    r = radius if radius is not None else _centre_radius(mask)[2]
    r_max = torch.amax(r * (mask > 0.5), dim=(1, 2, 3, 4))  # (B,)
    room_t = torch.as_tensor(room, dtype=mask.dtype, device=mask.device).reshape(-1)
    r_in = (room_t * r_max + margin)[:, None, None, None, None]
    t = ((r - r_in) / taper).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(torch.pi * t))


def dilate(mask: torch.Tensor, margin: int) -> torch.Tensor:
    """Grey dilation by a (2·margin+1)³ cube, as three 1-D max-pools (~50× cheaper than one 3-D pool)."""
    if margin <= 0:
        return mask
    k = 2 * margin + 1
    out = F.max_pool3d(mask, kernel_size=(k, 1, 1), stride=1, padding=(margin, 0, 0))
    out = F.max_pool3d(out, kernel_size=(1, k, 1), stride=1, padding=(0, margin, 0))
    return F.max_pool3d(out, kernel_size=(1, 1, k), stride=1, padding=(0, 0, margin))


def texture_region(baseline_mask: torch.Tensor, warped_mask: torch.Tensor, margin: int) -> torch.Tensor:
    """Where density may change ``(B, 1, D, H, W)`` in [0, 1]: the nodule then and now, plus a margin.

    Union of the baseline and warped masks, dilated by ``margin`` voxels, edge softened by a 3³ mean
    (no step in the predicted image). Computed without gradient: it only says *where* the texture
    branch may act; the warp is trained by its own terms.
    """
    with torch.no_grad():
        region = dilate(torch.maximum(baseline_mask, warped_mask), margin)
        return F.avg_pool3d(region, 3, stride=1, padding=1, count_include_pad=False)


def isotropic_scale_ddf(mask: torch.Tensor, log_ratio: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """Displacement field (voxels) that scales the nodule isotropically about its centroid.

    Volume changes by ``exp(log_ratio)``, so lengths by ``s = exp(log_ratio / 3)``; the output voxel
    ``x`` samples the input at ``c + (x - c) / s`` out to the larger of the old and new nodule extent
    (+2 voxels), and the field fades to zero over the next 6 voxels (:func:`nodule_window`), so the
    surroundings stay where they were instead of being scaled with the nodule.
    """
    _, offs, r = _centre_radius(mask)
    scale = torch.exp(log_ratio / 3.0)
    k = (1.0 / scale - 1.0)[:, None]  # c + (x - c) / s - x = (x - c) (1/s - 1)
    b, _, *size = mask.shape
    ddf = torch.stack([
        (offs[0] * k)[:, :, None, None].expand(b, *size),
        (offs[1] * k)[:, None, :, None].expand(b, *size),
        (offs[2] * k)[:, None, None, :].expand(b, *size),
    ], dim=1)
    if window is None:
        window = nodule_window(mask, room=scale.clamp(min=1.0), margin=2.0, taper=6.0, radius=r)
    return ddf * window


class FiLM(nn.Module):
    """Feature-wise affine modulation from the condition vector (identity at initialisation)."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond).chunk(2, dim=-1)
        return x * (1.0 + gamma[:, :, None, None, None]) + beta[:, :, None, None, None]


class AdaINBlock(nn.Module):
    """Conv → instance norm without its own affine → FiLM from the condition (AdaIN) → PReLU."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.norm = nn.InstanceNorm3d(out_ch, affine=False)
        self.film = FiLM(cond_dim, out_ch)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.act(self.film(self.norm(self.conv(x)), cond))


class CrossGate(nn.Module):
    """Gated cross-task exchange: each branch adds the other's features where a learned gate opens."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate_d = nn.Conv3d(2 * channels, channels, 1)
        self.gate_t = nn.Conv3d(2 * channels, channels, 1)
        self.msg_d = nn.Conv3d(channels, channels, 1)  # texture → deformation
        self.msg_t = nn.Conv3d(channels, channels, 1)  # deformation → texture

    def forward(self, d: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.cat([d, t], dim=1)
        return d + torch.sigmoid(self.gate_d(both)) * self.msg_d(t), t + torch.sigmoid(self.gate_t(both)) * self.msg_t(d)


class CrossAttention(nn.Module):
    """Token cross-attention between the decoders at the bottleneck (each attends to the other)."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        self.d_from_t = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.t_from_d = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm_d = nn.LayerNorm(channels)
        self.norm_t = nn.LayerNorm(channels)

    def forward(self, d: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, *size = d.shape
        dq = self.norm_d(d.flatten(2).transpose(1, 2))
        tq = self.norm_t(t.flatten(2).transpose(1, 2))
        d_upd, _ = self.d_from_t(dq, tq, tq, need_weights=False)
        t_upd, _ = self.t_from_d(tq, dq, dq, need_weights=False)
        d = d + d_upd.transpose(1, 2).reshape(b, c, *size)
        t = t + t_upd.transpose(1, 2).reshape(b, c, *size)
        return d, t


def _conv(in_ch: int, out_ch: int, strides: int = 1) -> Convolution:
    return Convolution(3, in_ch, out_ch, strides=strides, kernel_size=3, act="PRELU", norm="INSTANCE")


class Decoder(nn.Module):
    """One up-sampling path (bottleneck → half resolution) with skips and conditioned blocks."""

    def __init__(self, chans: list[int], cond_dim: int) -> None:
        super().__init__()
        # chans = [c1, c2, c3]: encoder widths at 1/2, 1/4, 1/8 of the input resolution
        self.blocks = nn.ModuleList([AdaINBlock(chans[2] + chans[1], chans[1], cond_dim), AdaINBlock(chans[1] + chans[0], chans[0], cond_dim)])

    def step(self, i: int, x: torch.Tensor, skip: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.blocks[i](torch.cat([x, skip], dim=1), cond)


def _upsample_field(field: torch.Tensor, size: tuple[int, ...], displacement: bool) -> torch.Tensor:
    """Trilinear up-sampling; displacements (in voxels) are rescaled to the finer grid."""
    up = F.interpolate(field, size=size, mode="trilinear", align_corners=False)
    if displacement:
        scale = torch.tensor([s / a for s, a in zip(size, field.shape[2:])], device=field.device, dtype=field.dtype)
        up = up * scale[None, :, None, None, None]
    return up


@dataclass
class GrowthOutput:
    """Everything a forward pass produces (all at the input resolution)."""

    image: torch.Tensor | None  # predicted follow-up image, window [0, 1] (None when only the mask was asked for)
    mask: torch.Tensor  # predicted follow-up mask, soft [0, 1]
    ddf: torch.Tensor  # total displacement field (voxels)
    residual: torch.Tensor | None  # texture residual added after warping (zero outside the nodule region)
    prior_log_ratio: torch.Tensor  # exponential-model log-volume ratio used (0 without history)
    flow: torch.Tensor | None = None  # the network's own displacement at its working resolution
    aux_mask: torch.Tensor | None = None
    aux_flow: torch.Tensor | None = None


class MTNoGNet(nn.Module):
    """The multi-task growth network (see module docstring)."""

    in_channels = 5  # baseline image, baseline mask, history image, history mask, history flag

    def __init__(self, cfg: GrowthConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or GrowthConfig()
        c = self.cfg.base_channels
        # The decoders stop at half resolution: displacement fields and density change are smooth,
        # the warped baseline carries the fine detail, and it makes a training step ~8x cheaper.
        chans = [c, 2 * c, 2 * c]
        self.chans = chans
        cd = self.cfg.cond_dim
        self.emb_dim = 16
        self.cond_mlp = nn.Sequential(nn.Linear(2 * self.emb_dim + 3, cd), nn.SiLU(), nn.Linear(cd, cd), nn.SiLU())
        self.enc1 = nn.Sequential(_conv(self.in_channels, c, 2), _conv(c, c))
        self.enc2 = nn.Sequential(_conv(c, chans[1], 2), _conv(chans[1], chans[1]))
        self.enc3 = nn.Sequential(_conv(chans[1], chans[2], 2), _conv(chans[2], chans[2]))
        self.bottleneck_film = FiLM(cd, chans[2])
        self.attn = CrossAttention(chans[2])
        self.dec_def = Decoder(chans, cd)
        self.dec_tex = Decoder(chans, cd)
        self.gates = nn.ModuleList([CrossGate(chans[1]), CrossGate(chans[0])])
        self.flow_head = nn.Conv3d(c, 3, 3, padding=1)
        self.tex_head = nn.Conv3d(c, 1, 3, padding=1)
        self.aux_flow_head = nn.Conv3d(chans[1], 3, 3, padding=1)
        for head in (self.flow_head, self.tex_head, self.aux_flow_head):
            nn.init.normal_(head.weight, std=1e-4)  # start at "copy the baseline"
            nn.init.zeros_(head.bias)
        self.warp = Warp(mode="bilinear", padding_mode="border")

    def condition(
        self, interval: torch.Tensor, days_before: torch.Tensor, has_hist: torch.Tensor, prior_log_ratio: torch.Tensor
    ) -> torch.Tensor:
        feats = torch.cat(
            [
                sinusoidal_days(interval, self.emb_dim),
                sinusoidal_days(days_before, self.emb_dim) * has_hist[:, None],
                has_hist[:, None],
                (prior_log_ratio / MAX_LOG_RATIO)[:, None],
                (torch.log1p(interval.clamp(min=0)) / math.log1p(3650.0))[:, None],
            ],
            dim=-1,
        )
        return self.cond_mlp(feats)

    def forward(
        self,
        baseline_image: torch.Tensor,
        baseline_mask: torch.Tensor,
        interval_days: torch.Tensor,
        history_image: torch.Tensor | None = None,
        history_mask: torch.Tensor | None = None,
        has_history: torch.Tensor | None = None,
        days_before: torch.Tensor | None = None,
        deep_supervision: bool = False,
        with_image: bool = True,
    ) -> GrowthOutput:
        """Predict the follow-up. ``with_image=False`` skips the texture head and the image warp (the
        pipeline's forecast needs only the mask); the mask is the same either way."""
        b = baseline_image.shape[0]
        dev, dt = baseline_image.device, baseline_image.dtype
        if has_history is None:
            has_history = torch.zeros(b, device=dev, dtype=dt)
        if history_image is None or history_mask is None:
            history_image = torch.zeros_like(baseline_image)
            history_mask = torch.zeros_like(baseline_mask)
        if days_before is None:
            days_before = torch.zeros(b, device=dev, dtype=dt)
        flag5 = has_history[:, None, None, None, None]
        history_image = history_image * flag5
        history_mask = history_mask * flag5
        v_base = baseline_mask.sum(dim=(1, 2, 3, 4))
        v_hist = history_mask.sum(dim=(1, 2, 3, 4))
        prior_lr = exponential_log_ratio(v_base, v_hist, days_before, interval_days, has_history)
        cond = self.condition(interval_days, days_before, has_history, prior_lr)

        x = torch.cat([baseline_image, baseline_mask, history_image, history_mask, flag5.expand_as(baseline_mask)], dim=1)
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.bottleneck_film(self.enc3(e2), cond)
        d, t = self.attn(e3, e3)
        d = self.dec_def.step(0, d, e2, cond)
        t = self.dec_tex.step(0, t, e2, cond)
        d, t = self.gates[0](d, t)
        aux_flow = self.aux_flow_head(d) if deep_supervision else None
        d = self.dec_def.step(1, d, e1, cond)
        t = self.dec_tex.step(1, t, e1, cond)
        d, t = self.gates[1](d, t)

        size = tuple(baseline_image.shape[2:])
        window = nodule_window(baseline_mask)
        prior_ddf = isotropic_scale_ddf(baseline_mask, prior_lr)
        flow = self.flow_head(d)
        ddf = prior_ddf + window * _upsample_field(flow, size, displacement=True)
        if not with_image:
            mask = self.warp(baseline_mask, ddf).clamp(0.0, 1.0)
            return GrowthOutput(image=None, mask=mask, ddf=ddf, residual=None, prior_log_ratio=prior_lr, flow=flow)
        # image and mask share one sampling grid: warp them as two channels of one tensor
        warped = self.warp(torch.cat([baseline_image, baseline_mask], dim=1), ddf)
        mask = warped[:, 1:].clamp(0.0, 1.0)
        region = texture_region(baseline_mask, mask, self.cfg.residual_margin)
        residual = region * torch.tanh(_upsample_field(self.tex_head(t), size, displacement=False))
        image = (warped[:, :1] + residual).clamp(0.0, 1.0)
        out = GrowthOutput(image=image, mask=mask, ddf=ddf, residual=residual, prior_log_ratio=prior_lr, flow=flow)
        if deep_supervision:
            aux_ddf = prior_ddf + window * _upsample_field(aux_flow, size, displacement=True)
            out.aux_flow = aux_flow
            out.aux_mask = self.warp(baseline_mask, aux_ddf).clamp(0.0, 1.0)
        return out

    def forward_batch(self, batch: dict, deep_supervision: bool = False) -> GrowthOutput:
        """Run on a collated batch dict from :mod:`inference.growth.data`."""
        return self(
            batch["baseline_image"],
            batch["baseline_mask"],
            batch["interval_days"],
            batch["history_image"],
            batch["history_mask"],
            batch["has_history"],
            batch["days_before"],
            deep_supervision=deep_supervision,
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
