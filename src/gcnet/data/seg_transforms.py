"""Joint image / mask transforms for semantic segmentation (mmsegmentation's training
pipeline): random rescale with a ratio range, random crop with a category-ratio cap, flip,
photometric distortion, normalisation, padding with the ignore index.

Every transform takes and returns ``(image, mask)``: the image a (3, H, W) tensor (uint8
until `Normalize`, float after), the mask an (H, W) uint8/int64 tensor of class ids.
Randomness comes from torch's global generator, so seeded workers reproduce.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "SegCompose",
    "RandomRescale",
    "Rescale",
    "RandomCrop",
    "RandomFlip",
    "PhotoMetricDistortion",
    "Normalize",
    "Pad",
    "keep_ratio_size",
]

Pair = tuple[torch.Tensor, torch.Tensor]


def _rand(lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def keep_ratio_size(h: int, w: int, scale: Sequence[float]) -> tuple[int, int]:
    """mmseg's keep-ratio rescale: the largest size with the long edge <= max(scale) and the
    short edge <= min(scale)."""
    long_edge, short_edge = max(scale), min(scale)
    f = min(long_edge / max(h, w), short_edge / min(h, w))
    return max(1, int(h * f + 0.5)), max(1, int(w * f + 0.5))


def _resize_pair(img: torch.Tensor, mask: torch.Tensor | None, size: tuple[int, int]):
    if tuple(img.shape[-2:]) == tuple(size):
        return img, mask
    img = TF.resize(img, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    if mask is not None:
        mask = TF.resize(mask[None], list(size), interpolation=TF.InterpolationMode.NEAREST)[0]
    return img, mask


class SegCompose:
    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> Pair:
        for t in self.transforms:
            img, mask = t(img, mask)
        return img, mask

    def __repr__(self) -> str:
        return f"SegCompose({self.transforms})"


class RandomRescale:
    """Keep-ratio rescale to ``scale * r`` with ``r ~ U(ratio_range)``; ``scale`` is
    (long, short) edges, e.g. (2048, 512) for Cityscapes, or None for the image's own size."""

    def __init__(self, scale: Sequence[int] | None, ratio_range: Sequence[float] = (0.5, 2.0)) -> None:
        self.scale, self.ratio_range = scale, tuple(ratio_range)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> Pair:
        r = _rand(*self.ratio_range)
        h, w = img.shape[-2:]
        base = self.scale if self.scale is not None else (max(h, w), min(h, w))
        return _resize_pair(img, mask, keep_ratio_size(h, w, [s * r for s in base]))


class Rescale:
    """Deterministic keep-ratio rescale of the image only (evaluation: the prediction is
    resized back to the original mask)."""

    def __init__(self, scale: Sequence[int]) -> None:
        self.scale = scale

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> Pair:
        size = keep_ratio_size(*img.shape[-2:], self.scale)
        return _resize_pair(img, None, size)[0], mask


class RandomCrop:
    """Random crop of ``size`` (h, w); up to 10 tries to find a crop where no single class
    covers more than ``cat_max_ratio`` of the labelled pixels (mmseg's rule)."""

    def __init__(self, size: Sequence[int], cat_max_ratio: float = 1.0, ignore_index: int = 255) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.cat_max_ratio, self.ignore_index = float(cat_max_ratio), ignore_index

    def _box(self, h: int, w: int) -> tuple[int, int, int, int]:
        ch, cw = min(self.size[0], h), min(self.size[1], w)
        y = int(torch.randint(0, h - ch + 1, ()))
        x = int(torch.randint(0, w - cw + 1, ()))
        return y, x, ch, cw

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> Pair:
        h, w = mask.shape[-2:]
        y, x, ch, cw = self._box(h, w)
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                crop = mask[y : y + ch, x : x + cw]
                _, counts = torch.unique(crop[crop != self.ignore_index], return_counts=True)
                if len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio:
                    break
                y, x, ch, cw = self._box(h, w)
        return img[..., y : y + ch, x : x + cw], mask[y : y + ch, x : x + cw]


class RandomFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> Pair:
        if _rand() < self.p:
            return img.flip(-1), mask.flip(-1)
        return img, mask


class PhotoMetricDistortion:
    """mmseg's photometric distortion, each step with probability 1/2: additive brightness
    (+-32), multiplicative contrast (0.5-1.5) before or after saturation (0.5-1.5) and hue
    (+-18 of OpenCV's 180 degrees). Works on uint8 images, returns uint8."""

    def __init__(self, brightness: float = 32, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue: float = 18):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> Pair:
        x = img.float()
        if _rand() < 0.5:
            x = x + _rand(-self.brightness, self.brightness)
        contrast_first = _rand() < 0.5
        if contrast_first and _rand() < 0.5:
            x = x * _rand(*self.contrast)
        x = x.clamp(0, 255) / 255.0
        if _rand() < 0.5:
            x = TF.adjust_saturation(x, _rand(*self.saturation))
        if _rand() < 0.5:
            x = TF.adjust_hue(x, _rand(-self.hue, self.hue) / 180.0)
        x = x * 255.0
        if not contrast_first and _rand() < 0.5:
            x = x * _rand(*self.contrast)
        return x.clamp(0, 255).round().to(torch.uint8), mask


class Normalize:
    """uint8 image -> float, ``(x/255 - mean) / std``; mask -> int64."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> Pair:
        x = (img.float() / 255.0 - self.mean) / self.std
        return x, mask.long()


class Pad:
    """Pad bottom/right to at least ``size`` (h, w): image with 0, mask with ``ignore_index``."""

    def __init__(self, size: Sequence[int], ignore_index: int = 255) -> None:
        self.size, self.ignore_index = (int(size[0]), int(size[1])), ignore_index

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> Pair:
        h, w = mask.shape[-2:]
        ph, pw = max(0, self.size[0] - h), max(0, self.size[1] - w)
        if ph or pw:
            img = F.pad(img, (0, pw, 0, ph), value=0)
            mask = F.pad(mask, (0, pw, 0, ph), value=self.ignore_index)
        return img, mask
