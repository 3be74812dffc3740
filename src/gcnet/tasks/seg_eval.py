"""Segmentation inference (whole image / sliding window, multi-scale + flip) and evaluation
(confusion-matrix mIoU, per-class IoU and accuracy, pixel accuracy), reduced across DDP ranks.

Predictions are scored at the resolution of the ground-truth mask: the logits are resized
to it (as mmsegmentation does), so a model run at a rescaled test size is still evaluated
on the original labels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gcnet.utils import distributed as du
from gcnet.utils.device import autocast_ctx
from gcnet.utils.progress import progress_bar

__all__ = [
    "confusion_matrix",
    "metrics_from_confusion",
    "slide_logits",
    "predict_probs",
    "evaluate_segmentation",
]


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = true class, columns = predicted;
    pixels whose target is ``ignore_index`` (or outside 0..num_classes-1) are skipped."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes)
    idx = t[keep] * num_classes + p[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metrics_from_confusion(cm: torch.Tensor) -> dict[str, Any]:
    """mIoU / mAcc (means over classes present in the labels or predictions; NaN classes
    skipped, as mmseg's nanmean), per-class IoU and accuracy, pixel accuracy aAcc (all %)."""
    cm = cm.double()
    tp = cm.diag()
    gt = cm.sum(1)
    union = gt + cm.sum(0) - tp
    iou = tp / union  # NaN where a class appears nowhere
    acc = tp / gt
    total = cm.sum()
    return {
        "mIoU": 100.0 * float(torch.nanmean(iou)) if total > 0 else math.nan,
        "mAcc": 100.0 * float(torch.nanmean(acc)) if total > 0 else math.nan,
        "aAcc": 100.0 * float(tp.sum() / total) if total > 0 else math.nan,
        "per_class_iou": [100.0 * float(v) for v in iou],
        "per_class_acc": [100.0 * float(v) for v in acc],
    }


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out["out"] if isinstance(out, Mapping) else out


def slide_logits(
    model: nn.Module, img: torch.Tensor, num_classes: int, crop_size: Sequence[int], stride: Sequence[int]
) -> torch.Tensor:
    """Sliding-window inference (mmseg's ``slide`` mode): overlapping crops of
    ``crop_size`` every ``stride`` pixels, logits averaged where crops overlap. Crops at the
    border are shifted inside the image; an image smaller than a crop is one window."""
    n, _, h, w = img.shape
    ch, cw = min(crop_size[0], h), min(crop_size[1], w)
    sh, sw = stride
    ny = max(h - ch + sh - 1, 0) // sh + 1
    nx = max(w - cw + sw - 1, 0) // sw + 1
    out = img.new_zeros((n, num_classes, h, w), dtype=torch.float32)
    count = img.new_zeros((1, 1, h, w), dtype=torch.float32)
    for iy in range(ny):
        for ix in range(nx):
            y1 = min(iy * sh, h - ch)
            x1 = min(ix * sw, w - cw)
            crop = img[:, :, y1 : y1 + ch, x1 : x1 + cw]
            out[:, :, y1 : y1 + ch, x1 : x1 + cw] += _logits(model, crop).float()
            count[:, :, y1 : y1 + ch, x1 : x1 + cw] += 1
    return out / count


def predict_probs(
    model: nn.Module,
    img: torch.Tensor,
    num_classes: int,
    out_size: Sequence[int] | None = None,
    mode: str = "whole",
    crop_size: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """Class probabilities (N, K, *out_size): softmax averaged over ``scales`` (image
    rescaled by each factor) and, with ``flip``, the horizontally flipped image."""
    if mode not in ("whole", "slide"):
        raise ValueError(f"eval mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and not (crop_size and stride):
        raise ValueError("slide inference needs eval.crop_size and eval.stride")
    h, w = img.shape[-2:]
    out_size = tuple(out_size) if out_size is not None else (h, w)
    total = None
    for s in scales:
        x = img
        if s != 1.0:
            size = (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5)))
            x = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            xi = x.flip(-1) if flipped else x
            if mode == "slide":
                logits = slide_logits(model, xi, num_classes, crop_size, stride)
            else:
                logits = _logits(model, xi).float()
            if flipped:
                logits = logits.flip(-1)
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            p = logits.softmax(1)
            total = p if total is None else total + p
    return total / (len(scales) * (2 if flip else 1))


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    loader,
    device: torch.device,
    num_classes: int,
    eval_cfg: Mapping[str, Any] | None = None,
    amp: str = "none",
    channels_last: bool = False,
    ignore_index: int = 255,
    progress: bool = False,
) -> dict[str, Any]:
    """mIoU etc. (see `metrics_from_confusion`) and the mean per-pixel NLL of the
    predicted probabilities, over every batch of ``loader``; reduced across ranks."""
    e = dict(eval_cfg or {})
    kw = dict(mode=e.get("mode", "whole"), crop_size=e.get("crop_size"), stride=e.get("stride"),
              scales=tuple(e.get("scales") or (1.0,)), flip=bool(e.get("flip", False)))  # fmt: skip
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    loss = torch.zeros(2, dtype=torch.float64, device=device)
    for images, masks, _ in progress_bar(loader, progress, desc="eval"):
        if images is None:
            continue
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True).long()
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        ctx = autocast_ctx(device, amp) if amp != "none" else contextlib.nullcontext()
        with ctx:
            probs = predict_probs(model, images, num_classes, out_size=masks.shape[-2:], **kw)
        probs = probs.float()
        valid = masks != ignore_index
        nll = F.nll_loss(probs.clamp_min(1e-12).log(), masks, ignore_index=ignore_index, reduction="sum")
        loss[0] += nll.double()
        loss[1] += valid.sum()
        cm += confusion_matrix(probs.argmax(1), masks, num_classes, ignore_index)
    du.all_reduce_sum(cm)
    du.all_reduce_sum(loss)
    if int(cm.sum()) == 0:
        raise ValueError("evaluation saw no labelled pixels (empty dataset, or every pixel ignored)")
    res = metrics_from_confusion(cm.cpu())
    res.update(loss=float(loss[0] / loss[1].clamp_min(1)), confusion_matrix=cm.cpu(),
               num_samples=len(loader.dataset) if hasattr(loader, "dataset") else None)  # fmt: skip
    return res
