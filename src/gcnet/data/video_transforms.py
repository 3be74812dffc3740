"""Clip sampling and clip transforms (SlowFast / mmaction2 style).

Sampling (``clip_len`` frames, one every ``frame_interval``; 8 x 8 by default): a clip
starting at ``s`` holds frames ``s, s + interval, ..., s + (clip_len - 1) * interval``, all
taken modulo the frame count ``n`` (a short video loops). With ``span = (clip_len - 1) *
interval + 1`` and ``max_offset = max(n - span, 0)``:

- train: one clip, ``s`` uniform over ``0 .. max_offset`` (every start whose clip fits;
  mmaction2 draws over ``n - clip_len * interval + 1`` starts, ``interval - 1`` fewer);
- test: mmaction2 1.x ``SampleFrames(test_mode=True)``: ``num_clips`` starts
  ``round(k * max_offset / (num_clips - 1))``, ``k = 0 .. num_clips - 1`` (the first clip at
  the start, the last one ending at the last frame), or ``max_offset // 2`` for one clip.

Transforms (every frame of a clip gets the same random parameters): train: the short side
scaled to a random integer size in ``train_scale`` (inclusive), a random ``crop_size``
square, horizontal flip with probability 1/2; test: the short side scaled to ``test_scale``,
``num_crops`` squares of side ``test_scale`` along the long side (SlowFast's ``uniform_crop``,
``spatial_idx`` 0, 1, 2: left / centre / right, or top / centre / bottom for portrait video;
one crop is the centre one). The long side is scaled by the same factor and floored (SlowFast's
``short_side_scale``); resizing is bilinear with antialiasing. Then to float in [0, 1],
normalised by ``mean`` / ``std`` (0-1 space, ImageNet's by default), as ``(C, T, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VideoTestTransform",
    "VideoTrainTransform",
    "short_side_size",
    "eval_clip_indices",
    "train_clip_indices",
    "uniform_crop_offset",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_sampling(num_frames: int, clip_len: int, frame_interval: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if clip_len < 1 or frame_interval < 1:
        raise ValueError(f"clip_len and frame_interval must be >= 1, got {clip_len} and {frame_interval}")


def train_clip_indices(
    num_frames: int, clip_len: int, frame_interval: int, rng: np.random.Generator
) -> np.ndarray:
    """``(clip_len,)`` frame indices of one random training clip (see the module docstring)."""
    _check_sampling(num_frames, clip_len, frame_interval)
    max_offset = max(num_frames - (clip_len - 1) * frame_interval - 1, 0)
    start = int(rng.integers(0, max_offset + 1))
    return np.mod(start + np.arange(clip_len) * frame_interval, num_frames)


def eval_clip_indices(num_frames: int, clip_len: int, frame_interval: int, num_clips: int) -> np.ndarray:
    """``(num_clips, clip_len)`` frame indices of the test clips (mmaction2 1.x SampleFrames
    with ``test_mode=True``; see the module docstring)."""
    _check_sampling(num_frames, clip_len, frame_interval)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    max_offset = max(num_frames - (clip_len - 1) * frame_interval - 1, 0)
    if num_clips > 1:
        starts = np.round(np.arange(num_clips) * (max_offset / (num_clips - 1))).astype(np.int64)
    else:
        starts = np.array([max_offset // 2])
    return np.mod(starts[:, None] + np.arange(clip_len)[None] * frame_interval, num_frames)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) with the short side ``size`` and the long side scaled alike, floored."""
    if height <= width:
        return size, max(size, int(math.floor(width / height * size)))
    return max(size, int(math.floor(height / width * size))), size


def uniform_crop_offset(height: int, width: int, size: int, spatial_idx: int) -> tuple[int, int]:
    """(y, x) of SlowFast's ``uniform_crop``: ``spatial_idx`` 0, 1, 2 = start, centre, end of
    the long side (the short side centred)."""
    y, x = int(math.ceil((height - size) / 2)), int(math.ceil((width - size) / 2))
    if height > width:
        y = {0: 0, 1: y, 2: height - size}[spatial_idx]
    else:
        x = {0: 0, 1: x, 2: width - size}[spatial_idx]
    return y, x


def _to_tchw(clip: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, H, W)."""
    t = torch.as_tensor(clip)
    if t.dim() != 4 or t.shape[-1] != 3:
        raise ValueError(f"a clip must be (T, H, W, 3) RGB, got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) uint8 with the short side ``size``; the (T, H, W, 3) memory layout of
    decoded frames (channels last) is kept: torchvision's uint8 path is fastest on it."""
    h, w = x.shape[-2:]
    hw = short_side_size(h, w, size)
    if hw == (h, w):
        return x
    return TF.resize(x, list(hw), antialias=True)


class _Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(
                f"mean and std must be 3 values each (std > 0), got {list(mean)} and {list(std)}"
            )
        # (x / 255 - mean) / std as one subtraction and one division on 0-255 values
        self.shift = torch.tensor([255.0 * float(m) for m in mean]).view(3, 1, 1, 1)
        self.scale = torch.tensor([255.0 * float(s) for s in std]).view(3, 1, 1, 1)

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (T, 3, H, W) -> normalised float32 (3, T, H, W), contiguous (into ``out``)."""
        if out is None:
            out = torch.empty((x.shape[1], x.shape[0], *x.shape[2:]), dtype=torch.float32)
        out.copy_(x.permute(1, 0, 2, 3))
        return out.sub_(self.shift).div_(self.scale)


class VideoTrainTransform:
    """A training clip: random short-side scale, random square crop, random flip, normalise.

    Args:
        scale: (low, high): the short side is scaled to an integer size drawn uniformly in
            [low, high].
        crop_size: side of the random square crop (<= low).
        hflip: flip horizontally with probability 1/2.
        mean, std: per-channel normalisation in 0-1 space.

    ``__call__(clip, rng)``: uint8 ``(T, H, W, 3)`` and a numpy Generator -> float32
    ``(3, T, crop_size, crop_size)``; `params` are the draws it makes.
    """

    def __init__(
        self,
        scale: Sequence[int] = (256, 320),
        crop_size: int = 224,
        hflip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if len(scale) != 2 or not 1 <= int(scale[0]) <= int(scale[1]):
            raise ValueError(f"train_scale must be [low, high] with 1 <= low <= high, got {list(scale)}")
        if not 1 <= int(crop_size) <= int(scale[0]):
            raise ValueError(f"crop_size={crop_size} must be >= 1 and <= the smallest train_scale {scale[0]}")
        self.scale = (int(scale[0]), int(scale[1]))
        self.crop_size = int(crop_size)
        self.hflip = bool(hflip)
        self.normalize = _Normalize(mean, std)

    def params(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, bool]:
        """(short side, crop y, crop x, flip) for a clip of ``height`` x ``width``."""
        size = int(rng.integers(self.scale[0], self.scale[1] + 1))
        h, w = short_side_size(height, width, size)
        y = int(rng.integers(0, h - self.crop_size + 1))
        x = int(rng.integers(0, w - self.crop_size + 1))
        flip = bool(self.hflip and rng.random() < 0.5)
        return size, y, x, flip

    def __call__(self, clip: np.ndarray | torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        x = _to_tchw(clip)
        size, top, left, flip = self.params(x.shape[-2], x.shape[-1], rng)
        x = _resize(x, size)[..., top : top + self.crop_size, left : left + self.crop_size]
        if flip:
            x = x.flip(-1)
        return self.normalize(x)


class VideoTestTransform:
    """Test views of clips: the short side scaled to ``scale``, then ``num_crops`` squares of
    side ``crop_size`` (default: ``scale``) along the long side (1: the centre crop).

    ``__call__(clips)``: uint8 ``(N, T, H, W, 3)`` (or one ``(T, H, W, 3)`` clip) -> float32
    ``(N * num_crops, 3, T, crop_size, crop_size)``, clip-major (clip 0 crop 0, clip 0 crop 1,
    ..., clip 1 crop 0, ...).
    """

    def __init__(
        self,
        scale: int = 256,
        num_crops: int = 3,
        crop_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 (centre) or 3 (SlowFast's uniform crops), got {num_crops}")
        crop = int(scale) if crop_size is None else int(crop_size)
        if not 1 <= crop <= int(scale):
            raise ValueError(f"test crop size {crop} must be >= 1 and <= test_scale {scale}")
        self.scale, self.num_crops, self.crop_size = int(scale), int(num_crops), crop
        self.normalize = _Normalize(mean, std)

    def crop_offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        """(y, x) of each crop in the resized frame."""
        idx = (1,) if self.num_crops == 1 else (0, 1, 2)
        return [uniform_crop_offset(height, width, self.crop_size, i) for i in idx]

    def __call__(self, clips: np.ndarray | torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(clips)
        if c.dim() == 4:
            c = c.unsqueeze(0)
        if c.dim() != 5 or c.shape[-1] != 3:
            raise ValueError(f"clips must be (N, T, H, W, 3) RGB, got shape {tuple(c.shape)}")
        n, t = c.shape[:2]
        x = _resize(_to_tchw(c.flatten(0, 1)), self.scale)  # every frame resized once
        x = x.view(n, t, *x.shape[1:])
        s = self.crop_size
        offsets = self.crop_offsets(x.shape[-2], x.shape[-1])
        out = torch.empty((n * len(offsets), 3, t, s, s), dtype=torch.float32)
        for i in range(n):
            for k, (y, left) in enumerate(offsets):
                self.normalize(x[i, :, :, y : y + s, left : left + s], out=out[i * len(offsets) + k])
        return out
