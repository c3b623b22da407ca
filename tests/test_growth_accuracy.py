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


def test_report_shape(report: dict) -> None:
    for method in ("model", "copy_baseline", "exponential_baseline"):
        entry = report[method]
        for key in ("dice", "psnr", "ssim", "volume_rel_error", "roi_mse"):
            assert key in entry
        assert set(entry["per_pattern"]) == {"growing", "stable", "shrinking", "gg_to_part_solid", "new", "resolved"}
    # copying is exact on volume only for stable nodules; resolved ones have no Dice
    assert report["copy_baseline"]["per_pattern"]["resolved"]["dice"] is None
