"""Classification transforms (torchvision transforms v2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchvision.transforms import v2

__all__ = ["build_transforms", "build_batch_mix"]


def build_transforms(data_cfg: Mapping[str, Any], train: bool, tensor_input: bool = False):
    """Train: (RandomResizedCrop | resize) + flip (+ RandAugment); eval: resize + center crop.
    Then float conversion and normalisation. ``tensor_input``: images arrive as uint8 tensors
    already at the right size (the synthetic set), so no resizing happens for eval."""
    size = int(data_cfg["image_size"])
    aug = data_cfg["augment"]
    ops: list = [] if tensor_input else [v2.ToImage()]
    if train:
        if aug["random_resized_crop"]:
            ops.append(v2.RandomResizedCrop(size, scale=tuple(aug["scale"]), antialias=True))
        elif not tensor_input:
            ops += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
        if aug["hflip"]:
            ops.append(v2.RandomHorizontalFlip())
        if aug["randaugment"]:
            ops.append(v2.RandAugment())
    elif not tensor_input:
        resize = int(round(size / float(aug["eval_crop_ratio"])))
        ops += [v2.Resize(resize, antialias=True), v2.CenterCrop(size)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(data_cfg["mean"], data_cfg["std"])]
    return v2.Compose(ops)


def build_batch_mix(data_cfg: Mapping[str, Any], num_classes: int):
    """MixUp / CutMix on a batch (one of them chosen at random per batch), or None."""
    aug = data_cfg["augment"]
    mixes = []
    if aug["mixup"] > 0:
        mixes.append(v2.MixUp(alpha=float(aug["mixup"]), num_classes=num_classes))
    if aug["cutmix"] > 0:
        mixes.append(v2.CutMix(alpha=float(aug["cutmix"]), num_classes=num_classes))
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
