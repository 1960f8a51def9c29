"""The training loop: a budget of optimizer steps in epochs of ``iterations_per_epoch`` steps, a learning-rate
schedule, validation after each epoch, best-model selection, early stopping (patience in steps), checkpoints
and resume, and whether the run converged.

A checkpoint is one dict (torchvision style): model, optimizer, scheduler, scaler, loop state.
It is written atomically every epoch to ``last.pt``; the best weights go to ``best.pt``.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from lesionseg.config import TrainConfig
from lesionseg.data.io import atomic_path
from lesionseg.training.engine import evaluate, seed_epoch, train_one_epoch
from lesionseg.training.precision import FP16, resolve_precision

LAST = "last.pt"
BEST = "best.pt"
PLATEAU_TOLERANCE = 0.01  # val Dice gained in the last quarter of a run that still counts as a plateau
_STEPS_AND_VALIDATION_SECONDS = [0.0]  # this process's total, over every fit (a tuning study runs several)


def steps_and_validation_seconds() -> float:
    """Seconds this process has spent in training steps and validation passes, over every :func:`fit` so
    far; a stage's wall time minus this is its fixed cost (imports, store, logging, registration)."""
    return _STEPS_AND_VALIDATION_SECONDS[0]


@dataclass
class FitState:
    """Where the loop stands; saved in every checkpoint."""

    epoch: int = 0  # last completed epoch (1-based); 0 = nothing done
    step: int = 0  # optimizer steps done
    best_val_dice: float = -1.0  # the smoothed validation Dice (``val_dice_ema``) at the chosen checkpoint
    best_epoch: int = 0
    best_step: int = 0
    stopped_early: bool = False
    converged: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


class Callback(Protocol):
    """What the loop reports; the tracking layer implements it (e.g. an MLflow logger)."""

    def on_fit_start(self, state: FitState, resumed: bool) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomic ``torch.save`` (temp file, then rename)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True`` (no arbitrary code from pickles)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step schedule over the whole budget: nnU-Net's poly (power 0.9), cosine, or constant."""
    steps = config.budget_steps
    if config.lr_schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=steps, power=0.9)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    train_loader,
    val_items: list[dict],
    config: TrainConfig,
    checkpoint_dir: str | Path,
    *,
    roi_size: Sequence[int],
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    progress: bool = True,
) -> FitState:
    """Train ``model`` for up to ``config.budget_steps`` optimizer steps, validating after every epoch of
    ``config.iterations_per_epoch`` steps and keeping the best weights (``checkpoint_dir/best.pt``).

    ``train_loader`` yields one epoch's batches (see :func:`lesionseg.training.loaders.train_loader`). With
    ``resume=True`` and a ``last.pt`` in ``checkpoint_dir``, continues after its last completed epoch.
    ``progress``: bars on a terminal, one line per epoch otherwise (logs stay readable).
    """
    checkpoint_dir = Path(checkpoint_dir)
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = build_scheduler(optimizer, config)
    scaler = torch.amp.GradScaler("cuda") if resolve_precision(device, config.amp) == FP16 else None
    state = FitState()
    resumed = resume and (checkpoint_dir / LAST).exists()
    if resumed:
        state = _restore(checkpoint_dir / LAST, model, optimizer, scheduler, scaler)
    for cb in callbacks:
        cb.on_fit_start(state, resumed)
    bars = progress and sys.stderr.isatty()
    epochs = tqdm(range(state.epoch + 1, config.epochs + 1), desc="epochs", initial=state.epoch,
                  total=config.epochs, disable=not bars)
    for epoch in epochs:
        if state.stopped_early:
            break
        metrics = _run_epoch(model, loss_fn, optimizer, scheduler, scaler, train_loader, val_items, config, roi_size,
                             epoch, bars)
        _update_state(state, epoch, metrics, config)
        if state.best_epoch == epoch:
            save_checkpoint(checkpoint_dir / BEST, {"model": model.state_dict(), "epoch": epoch,
                                                    "val_dice": metrics["val_dice"],
                                                    "val_dice_ema": metrics["val_dice_ema"]})
        save_checkpoint(checkpoint_dir / LAST, _payload(model, optimizer, scheduler, scaler, state))
        _report(epochs, epoch, config.epochs, metrics, state, bars=bars, lines=progress and not bars)
        for cb in callbacks:
            cb.on_epoch_end(epoch, metrics, state)
    state.converged = converged(state.history, state.stopped_early)
    for cb in callbacks:
        cb.on_fit_end(state)
    return state


def _report(epochs, epoch: int, total: int, metrics: dict[str, float], state: FitState, *, bars: bool,
            lines: bool) -> None:
    if bars:
        epochs.set_postfix(val_dice=f"{metrics['val_dice']:.3f}", ema=f"{metrics['val_dice_ema']:.3f}",
                           best=f"{state.best_val_dice:.3f}")
    elif lines:
        print(f"epoch {epoch}/{total} step {state.step} loss {metrics['train_loss']:.4f} "
              f"val_dice {metrics['val_dice']:.3f} ema {metrics['val_dice_ema']:.3f} "
              f"best {state.best_val_dice:.3f}@{state.best_step} "
              f"lr {metrics['lr']:.2e} {metrics['epoch_seconds']:.1f}s+{metrics.get('val_seconds', 0.0):.1f}s val",
              flush=True)


def converged(history: Sequence[dict[str, float]], stopped_early: bool) -> bool:
    """A run converged when it stopped early on patience (where ``patience_steps`` is set) or its smoothed
    validation Dice has plateaued: its last quarter of validations gained less than ``PLATEAU_TOLERANCE`` over
    the best before it.

    Where the best step falls does not count: under the poly schedule the learning rate nears zero at the end
    of the budget, and a plateaued curve still creeps up by a few thousandths, so its best step is often the
    last (issue 26: four of run 8's six models, gaining 0.002-0.019 over their last 10 validations).
    """
    if not history:
        return False
    if stopped_early:
        return True
    tail = max(1, len(history) // 4)
    if len(history) <= tail:
        return False
    curve = [h.get("val_dice_ema", h["val_dice"]) for h in history]
    return max(curve[-tail:]) - max(curve[:-tail]) < PLATEAU_TOLERANCE


def _run_epoch(model, loss_fn, optimizer, scheduler, scaler, loader, val_items, config, roi_size, epoch, bars):
    device = next(model.parameters()).device
    seed_epoch(config.seed, epoch, loader)
    started = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    train_loss, steps = train_one_epoch(model, loss_fn, optimizer, loader, device, epoch, scaler=scaler,
                                        scheduler=scheduler, progress=bars, amp=config.amp)
    train_seconds = time.perf_counter() - started
    val = evaluate(model, val_items, roi_size, device, overlap=config.sw_overlap, amp=config.amp)
    seconds = time.perf_counter() - started
    _STEPS_AND_VALIDATION_SECONDS[0] += seconds
    return {"train_loss": train_loss, "val_dice": val["val_dice"], "lr": lr, "epoch_seconds": train_seconds,
            "val_seconds": seconds - train_seconds, "steps": steps}


def smoothed(previous: float | None, value: float, weight: float) -> float:
    """Exponential moving average of validation Dice, as nnU-Net v2 keeps its ``ema_fg_dice`` (weight 0.9).

    With a small validation set (the demo's 6 mouse scans, one of them a sham that scores 0 or 1) the raw
    Dice jumps by 0.3 between epochs; the best raw epoch is then mostly luck. The average carries the trend.
    """
    return value if previous is None else weight * previous + (1.0 - weight) * value


def _update_state(state: FitState, epoch: int, metrics: dict[str, float], config: TrainConfig) -> None:
    state.epoch = epoch
    state.step += int(metrics.pop("steps"))
    previous = state.history[-1]["val_dice_ema"] if state.history else None
    metrics["val_dice_ema"] = smoothed(previous, metrics["val_dice"], config.val_ema)
    state.history.append({"epoch": epoch, "step": state.step, **metrics})
    if metrics["val_dice_ema"] > state.best_val_dice:
        state.best_val_dice, state.best_epoch, state.best_step = metrics["val_dice_ema"], epoch, state.step
    patience = config.patience_steps
    state.stopped_early = patience is not None and state.step - state.best_step >= patience and epoch < config.epochs


def _payload(model, optimizer, scheduler, scaler, state: FitState) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "state": dataclasses.asdict(state),
    }


def _restore(path: Path, model, optimizer, scheduler, scaler) -> FitState:
    payload = load_checkpoint(path)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    return FitState(**payload["state"])
