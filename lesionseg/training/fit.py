"""The training loop: epochs, validation, best-model selection, early stopping, checkpoints and resume.

A checkpoint is one dict (torchvision style): model, optimizer, scaler, loop state and caller extras.
It is written atomically every epoch to ``last.pt``; the best weights go to ``best.pt``.
"""
from __future__ import annotations

import dataclasses
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

LAST = "last.pt"
BEST = "best.pt"


@dataclass
class FitState:
    """Where the loop stands; saved in every checkpoint."""

    epoch: int = 0  # last completed epoch (1-based); 0 = nothing done
    best_val_dice: float = -1.0
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    stopped_early: bool = False
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
    """Train ``model`` for up to ``config.epochs`` epochs, validating each epoch and keeping the best.

    With ``resume=True`` and a ``last.pt`` in ``checkpoint_dir``, continues after its last completed epoch.
    Returns the final :class:`FitState`; the best weights are in ``checkpoint_dir/best.pt``.
    """
    checkpoint_dir = Path(checkpoint_dir)
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if (config.amp and device.type == "cuda") else None
    state = FitState()
    resumed = resume and (checkpoint_dir / LAST).exists()
    if resumed:
        state = _restore(checkpoint_dir / LAST, model, optimizer, scaler)
    for cb in callbacks:
        cb.on_fit_start(state, resumed)
    epochs = tqdm(range(state.epoch + 1, config.epochs + 1), desc="epochs", initial=state.epoch,
                  total=config.epochs, disable=not progress)
    for epoch in epochs:
        if state.stopped_early:
            break
        metrics = _run_epoch(model, loss_fn, optimizer, scaler, train_loader, val_items, config, roi_size, epoch,
                             progress)
        _update_state(state, epoch, metrics, config.patience)
        if state.best_epoch == epoch:
            save_checkpoint(checkpoint_dir / BEST, {"model": model.state_dict(), "epoch": epoch,
                                                    "val_dice": metrics["val_dice"]})
        save_checkpoint(checkpoint_dir / LAST, _payload(model, optimizer, scaler, state))
        epochs.set_postfix(val_dice=f"{metrics['val_dice']:.3f}", best=f"{state.best_val_dice:.3f}")
        for cb in callbacks:
            cb.on_epoch_end(epoch, metrics, state)
    for cb in callbacks:
        cb.on_fit_end(state)
    return state


def _run_epoch(model, loss_fn, optimizer, scaler, loader, val_items, config, roi_size, epoch, progress):
    device = next(model.parameters()).device
    seed_epoch(config.seed, epoch, loader)
    started = time.perf_counter()
    train_loss = train_one_epoch(model, loss_fn, optimizer, loader, device, epoch, scaler=scaler, progress=progress)
    train_seconds = time.perf_counter() - started
    val = evaluate(model, val_items, roi_size, device, overlap=config.sw_overlap, amp=scaler is not None)
    return {"train_loss": train_loss, "val_dice": val["val_dice"], "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": train_seconds}


def _update_state(state: FitState, epoch: int, metrics: dict[str, float], patience: int) -> None:
    state.epoch = epoch
    state.history.append({"epoch": epoch, **metrics})
    if metrics["val_dice"] > state.best_val_dice:
        state.best_val_dice, state.best_epoch = metrics["val_dice"], epoch
        state.epochs_without_improvement = 0
    else:
        state.epochs_without_improvement += 1
        state.stopped_early = state.epochs_without_improvement >= patience


def _payload(model, optimizer, scaler, state: FitState) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "state": dataclasses.asdict(state),
    }


def _restore(path: Path, model, optimizer, scaler) -> FitState:
    payload = load_checkpoint(path)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    return FitState(**payload["state"])
