"""The embedded default dataset: procedurally generated images where long-range context
decides the label.

Each image shows two objects on a noisy background, one in the left third and one in the
right third, so they are far apart. The label is the *relation* between their colours,
their distance on a colour wheel of 4 (red, green, blue, yellow):

    0 same colour    1 adjacent colours    2 opposite colours

(a symmetric relation: which object is on which side does not matter).

Each object alone says nothing about the label (every colour is equally likely on either
side), and shapes are random distractors. No single local window sees both objects, so a
network must bring the two sides together, which is what global context blocks do.
Images are generated on the fly from ``(seed, split, index)``: no files, no network,
identical on every machine.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SyntheticContext", "CONTEXT_CLASSES", "SPLIT_SEED", "check_synthetic_args"]

CONTEXT_CLASSES = ("same_color", "adjacent_color", "opposite_color")
_PALETTE = np.array([[220, 50, 50], [50, 180, 60], [60, 90, 230], [230, 200, 40]], dtype=np.float32)
_SHAPES = ("square", "disc", "cross")
SPLIT_SEED = {"train": 0, "val": 1, "test": 2}  # the disjoint random streams of the embedded sets


def check_synthetic_args(split: str, image_size: int, num_samples: int, min_size: int) -> None:
    """The embedded sets' arguments: a known split, ``image_size >= min_size``, at least one
    sample; a one-line ValueError naming the argument otherwise."""
    if split not in SPLIT_SEED:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEED)}, got {split!r}")
    if image_size < min_size:
        raise ValueError(f"image_size must be >= {min_size}, got {image_size}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")


class SyntheticContext(Dataset):
    """``len`` images of ``image_size`` x ``image_size``; items are (uint8 CHW tensor, label).

    Args:
        num_samples: dataset length.
        image_size: side in pixels (>= 24).
        split: ``train``, ``val`` or ``test`` (disjoint random streams).
        seed: base seed; the same (seed, split, index) always gives the same image.
        transform: applied to the uint8 tensor image.
    """

    classes = CONTEXT_CLASSES

    def __init__(
        self,
        num_samples: int = 2000,
        image_size: int = 48,
        split: str = "train",
        seed: int = 0,
        transform=None,
    ) -> None:
        check_synthetic_args(split, image_size, num_samples, 24)
        self.num_samples = num_samples
        self.image_size = image_size
        self.split = split
        self.seed = seed
        self.transform = transform
        self.class_to_idx = {c: i for i, c in enumerate(CONTEXT_CLASSES)}
        self.targets = [self._label(i) for i in range(num_samples)]

    def __len__(self) -> int:
        return self.num_samples

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_SEED[self.split], index])

    def _spec(self, index: int):
        rng = self._rng(index)
        label = int(rng.integers(len(CONTEXT_CLASSES)))
        c1 = int(rng.integers(len(_PALETTE)))
        step = label if label != 1 else int(rng.choice((1, 3)))  # adjacent: either neighbour
        c2 = (c1 + step) % len(_PALETTE)
        s1, s2 = (int(v) for v in rng.integers(len(_SHAPES), size=2))
        return rng, label, (c1, s1), (c2, s2)

    def _label(self, index: int) -> int:
        return self._spec(index)[1]

    def _draw(self, img: np.ndarray, rng, cx: int, cy: int, r: int, color: int, shape: int) -> None:
        yy, xx = np.ogrid[: img.shape[0], : img.shape[1]]
        dx, dy = np.abs(xx - cx), np.abs(yy - cy)
        if _SHAPES[shape] == "square":
            mask = (dx <= r) & (dy <= r)
        elif _SHAPES[shape] == "disc":
            mask = dx**2 + dy**2 <= (r + 0.5) ** 2
        else:  # cross
            w = max(1, r // 3)
            mask = ((dx <= r) & (dy <= w)) | ((dy <= r) & (dx <= w))
        jitter = rng.normal(0, 12, size=3).astype(np.float32)
        img[mask] = np.clip(_PALETTE[color] + jitter, 0, 255)

    def render(self, index: int) -> tuple[np.ndarray, int]:
        """(H, W, 3) uint8 image and label for ``index``."""
        rng, label, (c1, s1), (c2, s2) = self._spec(index)
        n = self.image_size
        img = rng.normal(110, 30, size=(n, n, 3)).clip(0, 255).astype(np.float32)
        r = max(3, n // 8)
        third = n // 3
        y1, y2 = (int(rng.integers(r + 1, n - r - 1)) for _ in range(2))
        x1 = int(rng.integers(r + 1, max(r + 2, third - r)))
        x2 = int(rng.integers(min(n - r - 2, 2 * third + r), n - r - 1))
        self._draw(img, rng, x1, y1, r, c1, s1)
        self._draw(img, rng, x2, y2, r, c2, s2)
        return img.astype(np.uint8), label

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        img, label = self.render(index)
        x = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            x = self.transform(x)
        return x, label
