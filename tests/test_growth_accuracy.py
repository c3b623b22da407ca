"""Shipped growth weights on freshly generated, held-out phantom pairs (seeds never used in training).

A loose version of the model card's numbers on a small set (the full evaluation is in
``inference/growth/MODEL_CARD.md``): the model must beat copying the baseline on Dice and volume, and
be accurate when an earlier time point is available.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from dicom_node.cli import main
from inference.phantoms import generate_patch_pairs

HELD_OUT_SEED = 777_001  # training used 1000 and validation 2000; see MODEL_CARD.md


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("heldout")
    # 36 pairs = 6 of each growth pattern, anisotropic spacings drawn per pair
    manifest = generate_patch_pairs(out, 36, seed=HELD_OUT_SEED, vary_spacing=True)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # through the CLI, with the shipped weights (no --weights)
        rc = main(["evaluate", "growth", "--manifest", str(manifest), "--json", "--batch-size", "6"])
    assert rc == 0
    return json.loads(buf.getvalue())


def test_model_beats_copy_baseline(report: dict) -> None:
    """What the shipped weights achieve (MODEL_CARD.md); the issue's full targets are not all met."""
    model, copy = report["model"], report["copy_baseline"]
    assert report["pairs"] == 36
    assert model["dice"] >= copy["dice"] + 0.04, (model["dice"], copy["dice"])
    assert model["volume_rel_error"] < copy["volume_rel_error"], (model, copy)
    grow_m, grow_c = model["per_pattern"]["growing"], copy["per_pattern"]["growing"]
    assert grow_m["dice"] >= grow_c["dice"] + 0.05, (grow_m, grow_c)
    hist = model["per_history"]["with_history"]
    assert hist["dice"] >= 0.80, hist
    assert hist["volume_rel_error"] <= 0.10, hist


def test_model_image_not_worse_than_copy(report: dict) -> None:
    """The predicted patch is closer to the follow-up than the baseline is, in the nodule region, and
    no worse over the whole patch. On these 36 pairs the shipped weights give PSNR 31.34 vs 31.32 dB
    and SSIM 0.804 vs 0.802 (validation: 30.49 vs 30.20, 0.7585 vs 0.7544): the whole-patch margin is
    small, so the test allows a little slack there and asserts the region error strictly."""
    model, copy = report["model"], report["copy_baseline"]
    assert model["roi_mse"] < 0.9 * copy["roi_mse"], (model["roi_mse"], copy["roi_mse"])
    assert model["psnr"] >= copy["psnr"] - 0.1, (model["psnr"], copy["psnr"])
    assert model["ssim"] >= copy["ssim"] - 0.002, (model["ssim"], copy["ssim"])


def test_report_shape(report: dict) -> None:
    for method in ("model", "copy_baseline", "exponential_baseline"):
        entry = report[method]
        for key in ("dice", "psnr", "ssim", "volume_rel_error", "roi_mse"):
            assert key in entry
        assert set(entry["per_pattern"]) == {"growing", "stable", "shrinking", "gg_to_part_solid", "new", "resolved"}
    # copying is exact on volume only for stable nodules; resolved ones have no Dice
    assert report["copy_baseline"]["per_pattern"]["resolved"]["dice"] is None
