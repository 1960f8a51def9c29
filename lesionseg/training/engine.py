"""One epoch of training and one pass of evaluation, in the torchvision reference style."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss
from torch import nn
from tqdm.auto import tqdm

from lesionseg.evaluation.metrics import dice
from lesionseg.training.precision import autocast_context


def build_loss(name: str) -> nn.Module:
    """Soft Dice (the seed study's) or Dice + cross-entropy, on 2-class logits; wrapped so that deep
    supervision outputs (a list of logits at several scales) are handled too.

    The Dice term covers the lesion channel only (the background's Dice is near 1 and would drown the
    lesion's gradient) and is pooled over the batch, so a sham (empty mask) in a batch is well defined.
    """
    base = {
        "dice": lambda: DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True),
        "dicece": lambda: DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True),
    }[name]()
    return DeepSupervisionLoss(base, weight_mode="exp")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_epoch(seed: int, epoch: int, loader) -> None:
    """Make epoch ``epoch`` repeatable on its own (so a resumed run draws what the original would have):
    torch's global RNG, the loader's shuffle and MONAI's random transforms all restart from seed + epoch."""
    torch.manual_seed(seed + epoch)
    for source in (loader, getattr(loader, "sampler", None)):
        if getattr(source, "generator", None) is not None:
            source.generator.manual_seed(seed + epoch)
    transform = getattr(loader.dataset, "transform", None)
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed + epoch)


def train_one_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader,
    device: torch.device,
    epoch: int,
    *,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = True,
    amp: bool = False,
) -> tuple[float, int]:
    """Train for one epoch (every batch of ``loader``), stepping ``scheduler`` after each optimizer step;
    returns the mean batch loss and the number of steps. ``amp``: mixed precision where ``device`` has it
    (:func:`lesionseg.training.precision.resolve_precision`); ``scaler`` only for fp16."""
    model.train()
    losses = []
    batches = tqdm(loader, desc=f"epoch {epoch} train", leave=False, disable=not progress, mininterval=1.0)
    for batch in batches:
        image, label = batch["image"].to(device), batch["label"].to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, amp):
            output = model(image)
            if output.dim() == image.dim() + 1:  # deep supervision: (B, heads, C, ...) -> list of heads
                output = list(torch.unbind(output, dim=1))
            loss = loss_fn(output, label)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
        batches.set_postfix(loss=f"{losses[-1]:.4f}")
    return float(np.mean(losses)), len(losses)


@torch.inference_mode()
def predict_volume(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    device: torch.device,
    *,
    overlap: float = 0.25,
    amp: bool = False,
) -> torch.Tensor:
    """Lesion probability for a (B, 1, X, Y, Z) image with sliding-window inference (one window when the
    volume is no larger than ``roi_size``); ``amp``: the training path's mixed precision (bf16 on CPUs that
    have it, fp16 on CUDA)."""
    model.eval()
    with autocast_context(device, amp):
        logits = sliding_window_inference(
            image.to(device), roi_size=list(roi_size), sw_batch_size=2, predictor=model, overlap=overlap,
            mode="gaussian",
        )
    return torch.softmax(logits.float(), dim=1)[:, 1]


def selection_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Per-case score for model selection: Dice, except that a sham scores 1 when left empty and 0 on a
    false alarm (plain Dice is undefined there, see :func:`lesionseg.evaluation.metrics.dice`)."""
    if not gt.any():
        return 0.0 if pred.any() else 1.0
    return dice(pred, gt)


def evaluate(
    model: nn.Module,
    items: list[dict],
    roi_size: Sequence[int],
    device: torch.device,
    *,
    overlap: float = 0.25,
    amp: bool = False,
    score: Callable[[np.ndarray, np.ndarray], float] = selection_dice,
) -> dict[str, float]:
    """Mean per-case score (``val_dice``) over whole volumes."""
    cases = predict_items(model, items, roi_size, device, overlap=overlap, amp=amp)
    return {"val_dice": float(np.mean([score(pred, label) for pred, label in cases]))}


def predict_items(
    model: nn.Module,
    items: list[dict],
    roi_size: Sequence[int],
    device: torch.device,
    *,
    overlap: float = 0.25,
    amp: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(binary prediction, binary label) of each whole-volume item (``image``, ``label`` channel-first)."""
    cases = []
    for item in items:
        prob = predict_volume(model, torch.as_tensor(item["image"])[None], roi_size, device, overlap=overlap, amp=amp)
        cases.append(((prob[0] > 0.5).cpu().numpy(), np.asarray(item["label"][0]) > 0.5))
    return cases
