"""Training MT-NoGNet on a growth manifest: seeded, resumable, checkpointed, CPU or CUDA.

Determinism and resumption: every random draw of step ``k`` (which pairs, which flips/turns,
which history time points are hidden) comes from generators seeded with ``(seed, k)``, not from a
stream that runs across steps. A checkpoint therefore only needs the model, the optimiser, the
learning-rate schedule and ``k``: resuming from it continues exactly the run that was interrupted.

Outputs in ``out_dir``: ``checkpoint.pt`` (full state, written atomically every
``checkpoint_every`` steps and at the end), ``weights.pt`` (the shippable fp16 weights with their
config) and ``metrics.json`` (set-up, timing, loss history).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .data import GrowthConfig, PairCache, augmentation, collate, read_manifest
from .losses import GrowthLoss, LossWeights
from .network import MTNoGNet, count_parameters

log = logging.getLogger("noduletrack.growth.train")

MODEL_NAME = "MT-NoGNet"


@dataclass
class TrainOptions:
    """Everything that defines a run (stored in the checkpoint; a resume must use the same)."""

    steps: int = 3000
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    history_dropout: float = 0.3  # hide an existing earlier time point so the model works without one
    checkpoint_every: int = 100
    log_every: int = 25
    threads: int = 2
    config: GrowthConfig = field(default_factory=GrowthConfig)
    loss: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.history_dropout < 1.0:
            raise ValueError(f"history_dropout must be in [0, 1), got {self.history_dropout}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        d["loss"] = self.loss.to_dict()
        return d


def pick_device(name: str | None = None) -> torch.device:
    """``cuda`` when available unless told otherwise."""
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _step_batch(cache: PairCache, opts: TrainOptions, step: int) -> dict[str, Any]:
    """The (deterministic) augmented batch of one step."""
    rng = np.random.default_rng([opts.seed, step])
    idx = rng.choice(len(cache), size=opts.batch_size, replace=len(cache) < opts.batch_size)
    aug = augmentation(seed=int(rng.integers(2**31 - 1)))
    samples = []
    for i in idx:
        s = aug(cache.get(int(i)))
        if float(s["has_history"]) > 0 and rng.random() < opts.history_dropout:
            s["has_history"] = torch.tensor(0.0)
            s["days_before"] = torch.tensor(0.0)
        samples.append({k: (torch.as_tensor(v).float() if not isinstance(v, str) else v) for k, v in s.items()})
    return collate(samples)


def _lr_at(opts: TrainOptions, step: int) -> float:
    """Linear warm-up for 5 % of the steps, then cosine decay to 5 % of the peak."""
    warm = max(1, int(0.05 * opts.steps))
    if step < warm:
        return opts.lr * (step + 1) / warm
    p = (step - warm) / max(1, opts.steps - warm)
    return opts.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, p))))


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_weights(model: MTNoGNet, path: Path, extra: dict[str, Any]) -> None:
    """The shippable file: fp16 state dict (halves the size; inference casts back to fp32) + config."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    _atomic_save({"model": MODEL_NAME, "config": model.cfg.to_dict(), "state_dict": state, **extra}, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[MTNoGNet, dict[str, Any]]:
    """Load weights (``weights.pt`` or a ``checkpoint.pt``) → model in eval mode and the file's metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"growth model weights not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or "state_dict" not in blob or "config" not in blob:
        raise ValueError(f"{path} is not a growth model file (no state_dict/config)")
    model = MTNoGNet(GrowthConfig.from_dict(blob["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    model.to(device).eval()
    meta = {k: v for k, v in blob.items() if k not in ("state_dict", "optimizer")}
    return model, meta


def train(
    manifest: str | Path,
    out_dir: str | Path,
    opts: TrainOptions | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) and return the metrics dict also written to ``metrics.json``.

    ``stop_after`` ends the run early after that many steps of *this* call (as an interruption
    would), leaving a checkpoint to resume from; used by tests.
    """
    from tqdm import tqdm

    opts = opts or TrainOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(opts.threads)
    dev = pick_device(device)
    ckpt_path = out / "checkpoint.pt"

    records = read_manifest(manifest)
    t_load = time.perf_counter()
    cache = PairCache(records, opts.config, progress=progress)
    load_seconds = time.perf_counter() - t_load

    torch.manual_seed(opts.seed)
    model = MTNoGNet(opts.config).to(dev)
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    loss_fn = GrowthLoss(opts.loss)
    start, history, elapsed_before, cpu_before = 0, [], 0.0, 0.0
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["options"] != opts.to_dict():
            diff = sorted(k for k in opts.to_dict() if ck["options"].get(k) != opts.to_dict()[k])
            raise ValueError(f"cannot resume {ckpt_path}: options differ from the checkpoint's ({', '.join(diff)})")
        model.load_state_dict(ck["state_dict"])
        optim.load_state_dict(ck["optimizer"])
        start, history, elapsed_before = int(ck["step"]), list(ck["history"]), float(ck["train_seconds"])
        cpu_before = float(ck.get("train_cpu_seconds", 0.0))
        log.info("resumed", extra={"fields": {"checkpoint": str(ckpt_path), "step": start}})
    elif resume:
        log.info("no checkpoint to resume; starting fresh", extra={"fields": {"checkpoint": str(ckpt_path)}})

    def checkpoint(step: int, seconds: float, cpu: float) -> None:
        _atomic_save(
            {"model": MODEL_NAME, "config": opts.config.to_dict(), "options": opts.to_dict(), "step": step,
             "state_dict": model.state_dict(), "optimizer": optim.state_dict(), "history": history,
             "train_seconds": seconds, "train_cpu_seconds": cpu},
            ckpt_path,
        )

    log.info("training", extra={"fields": {"pairs": len(cache), "device": str(dev), "params": count_parameters(model),
                                           "start_step": start, "steps": opts.steps}})
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    end = opts.steps if stop_after is None else min(opts.steps, start + stop_after)
    running: dict[str, float] = {}
    n_running = 0
    bar = tqdm(range(start, end), initial=start, total=opts.steps, desc="train growth", unit="step", disable=not progress)
    step = start
    for step in bar:
        batch = _step_batch(cache, opts, step)
        batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        torch.manual_seed(opts.seed * 1_000_003 + step)  # any stochastic op inside the model
        for g in optim.param_groups:
            g["lr"] = _lr_at(opts, step)
        out_ = model.forward_batch(batch, deep_supervision=True)
        loss, parts = loss_fn(out_, batch)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optim.step()
        for k, v in parts.items():
            running[k] = running.get(k, 0.0) + v
        n_running += 1
        if on_step:
            on_step(step, parts)
        done = step + 1
        if done % opts.log_every == 0 or done == end:
            entry = {"step": done, "lr": _lr_at(opts, step), **{k: round(v / n_running, 6) for k, v in running.items()},
                     "seconds": round(elapsed_before + time.perf_counter() - t0, 1)}
            history.append(entry)
            running, n_running = {}, 0
            bar.set_postfix(loss=f"{entry['total']:.4f}", dice=f"{entry['dice']:.3f}")
            log.info("train step", extra={"fields": entry})
        if done % opts.checkpoint_every == 0 and done != end:
            checkpoint(done, elapsed_before + time.perf_counter() - t0, cpu_before + time.process_time() - c0)
    bar.close()
    done = end
    seconds = elapsed_before + time.perf_counter() - t0
    cpu_seconds = cpu_before + time.process_time() - c0
    checkpoint(done, seconds, cpu_seconds)
    metrics: dict[str, Any] = {
        "model": MODEL_NAME,
        "manifest": str(manifest),
        "pairs": len(cache),
        "patterns": sorted({r.pattern or "unknown" for r in records}),
        "with_history": sum(1 for r in records if r.history),
        "device": str(dev),
        "parameters": count_parameters(model),
        "step": done,
        "finished": done >= opts.steps,
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),  # both threads; wall time depends on other load
        "load_seconds": round(load_seconds, 1),
        "options": opts.to_dict(),
        "history": history,
    }
    if done >= opts.steps:
        save_weights(model, out / "weights.pt", {"train_seconds": round(seconds, 1), "steps": done, "seed": opts.seed,
                                                  "loss": opts.loss.to_dict()})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
