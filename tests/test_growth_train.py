"""Growth training: the loss falls on a tiny set; a resumed run reproduces an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.growth.data import GrowthConfig
from inference.growth.network import MTNoGNet, isotropic_scale_ddf
from inference.growth.train import TrainOptions, load_model, train
from tests.growth_synth import make_pairs

# Small grid and network so that a step costs a few tens of ms on a quiet CPU.
TINY = GrowthConfig(patch=24, spacing_mm=1.5, base_channels=8, cond_dim=16)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("gtrain"), 4, seed=3, shape=(32, 32, 32))


def _untrained_model_and_noise(seed: int) -> tuple[MTNoGNet, torch.Tensor, torch.Tensor]:
    """A seeded untrained tiny model and a batch of two random 24³ images with sparse random masks."""
    torch.manual_seed(seed)
    model = MTNoGNet(TINY).eval()
    img = torch.rand(2, 1, 24, 24, 24)
    mask = (torch.rand(2, 1, 24, 24, 24) > 0.8).float()
    return model, img, mask


def test_new_model_copies_baseline() -> None:
    """Heads start near zero: an untrained model predicts (almost) no change without history."""
    model, img, mask = _untrained_model_and_noise(seed=0)
    with torch.no_grad():
        out = model(img, mask, torch.tensor([100.0, 400.0]))
    assert out.ddf.abs().max() < 0.05
    assert (out.mask - mask).abs().max() < 0.05


def test_exponential_field_scales_volume() -> None:
    """The isotropic scaling field multiplies a sphere's volume by exp(log_ratio)."""
    from monai.networks.blocks import Warp

    g = np.indices((40, 40, 40)).astype(np.float32)
    r = np.sqrt(((g - 19.5) ** 2).sum(0))
    sphere = torch.as_tensor((r <= 6).astype(np.float32))[None, None]
    ddf = isotropic_scale_ddf(sphere, torch.tensor([np.log(2.0)], dtype=torch.float32))
    warped = Warp()(sphere, ddf)
    assert abs(float(warped.sum() / sphere.sum()) - 2.0) < 0.08


def test_loss_decreases(manifest: Path, tmp_path: Path) -> None:
    totals: list[float] = []
    opts = TrainOptions(steps=30, batch_size=2, lr=3e-3, seed=1, checkpoint_every=1000, log_every=10, threads=1, config=TINY)
    metrics = train(manifest, tmp_path / "run", opts, progress=False, on_step=lambda s, p: totals.append(p["total"]))
    assert len(totals) == 30
    first, last = np.mean(totals[:6]), np.mean(totals[-6:])
    assert last < 0.8 * first, (first, last)
    assert (tmp_path / "run" / "weights.pt").is_file()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["step"] == 30 and saved["finished"] and saved["train_seconds"] > 0
    model, meta = load_model(tmp_path / "run" / "weights.pt")
    assert meta["model"] == "MT-NoGNet" and model.cfg == TINY


def test_resume_reproduces_state(manifest: Path, tmp_path: Path) -> None:
    opts = TrainOptions(steps=4, batch_size=2, seed=5, checkpoint_every=2, log_every=1, threads=1, config=TINY)
    train(manifest, tmp_path / "straight", opts, progress=False)
    train(manifest, tmp_path / "split", opts, progress=False, stop_after=2)  # "interrupted" after 2 steps
    ck = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 2 and not (tmp_path / "split" / "weights.pt").exists()
    train(manifest, tmp_path / "split", opts, progress=False, resume=True)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"])
    assert [h["total"] for h in a["history"]] == [h["total"] for h in b["history"]]


def test_resume_with_other_options_refused(manifest: Path, tmp_path: Path) -> None:
    opts = TrainOptions(steps=2, batch_size=2, seed=5, threads=1, config=TINY)
    train(manifest, tmp_path / "r", opts, progress=False, stop_after=1)
    with pytest.raises(ValueError, match=r"options differ.*seed"):
        train(manifest, tmp_path / "r", TrainOptions(steps=2, batch_size=2, seed=6, threads=1, config=TINY), progress=False, resume=True)


def test_texture_residual_confined_to_nodule() -> None:
    """The texture residual acts only on the nodule (then and now, plus the margin): far from it the
    predicted image is the warped baseline, even when the texture head is strongly non-zero."""
    torch.manual_seed(0)
    model = MTNoGNet(TINY).eval()
    with torch.no_grad():
        model.tex_head.bias.fill_(0.5)  # a large, uniform density change if it were not confined
    img = torch.rand(2, 1, 24, 24, 24)
    mask = torch.zeros(2, 1, 24, 24, 24)
    mask[:, :, 9:14, 9:14, 9:14] = 1.0
    with torch.no_grad():
        out = model(img, mask, torch.tensor([200.0, 400.0]))
    assert out.residual is not None and out.image is not None
    assert float(out.residual[:, :, 10:13, 10:13, 10:13].min()) > 0.3  # inside the nodule it acts
    far = torch.ones_like(mask, dtype=torch.bool)
    far[:, :, 5:18, 5:18, 5:18] = False  # beyond the nodule + margin + soft edge
    assert float(out.residual[far].abs().max()) == 0.0
    warped = model.warp(img, out.ddf)
    assert torch.allclose(out.image[far], warped.clamp(0, 1)[far])


def test_mask_only_forward_matches_full() -> None:
    """The forecaster's ``with_image=False`` path gives the same mask and field as the full pass."""
    model, img, mask = _untrained_model_and_noise(seed=1)
    with torch.no_grad():
        full = model(img, mask, torch.tensor([100.0, 700.0]))
        lite = model(img, mask, torch.tensor([100.0, 700.0]), with_image=False)
    assert lite.image is None and lite.residual is None
    assert torch.allclose(full.mask, lite.mask, atol=1e-6) and torch.allclose(full.ddf, lite.ddf, atol=1e-6)
