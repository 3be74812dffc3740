"""The demo's embedded dense task, where long-range context is necessary by construction:
every object is labelled by a *key* that lies beyond a plain network's receptive field.

Construction (`FarKeySegmentation`, ``data.dataset: far_key``), for each image:

- a noisy grey background (each channel N(110, 20), independently per pixel);
- one *key*: a stripe ``key_size`` wide (1/8 of the side) of a saturated colour, red, green
  or blue, along one random edge;
- one to three *objects* (squares and discs of random size), all in the same light-grey
  texture whatever their class, placed so that every object pixel is at least
  ``min_distance`` (36) pixels from every key pixel in Chebyshev distance
  (max(|dy|, |dx|)).

Labels: the key's pixels and every object pixel are the key's colour class (``red_key``,
``green_key``, ``blue_key``); the rest is ``background``. The key's own class is local (its
colour); an object looks the same whatever its class, so an object pixel's label is decided
by pixels at least ``min_distance`` away. A network whose output at a pixel depends only on
input pixels less than ``min_distance`` away (a plain CNN's receptive field: 32 px for the
demo's ``fcn_tiny_s4``) can segment the objects but can only guess their class: one object
class in three on average. A block that pools context over the whole image (GC, SE, NL, SNL
in the head) can read the key. (The key is a stripe, 1/8 of the image, rather than a small
patch so that the context models learn to read it within the demo's few hundred steps.)

``tests/data/test_context_demo.py`` checks the construction against the demo network's
receptive field (computed structurally from the plain network: no input pixel of the key
reaches the output at any object pixel), and that a hand-written oracle with global
information (`oracle_predict`) solves the task while the best a network without it can
do (`blind_oracle_predict`) cannot. Items are generated from ``(seed, split,
index)``: no files, no network, identical on every machine.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .synthetic import SPLIT_SEED, check_synthetic_args

__all__ = ["FAR_KEY_CLASSES", "FarKeySegmentation", "blind_oracle_predict", "oracle_predict"]

FAR_KEY_CLASSES = ("background", "red_key", "green_key", "blue_key")
_KEY_COLORS = np.array([(220, 50, 50), (50, 190, 60), (60, 90, 230)], dtype=np.float32)
_BACKGROUND, _OBJECT = 110.0, 205.0
# rendered items, shared by every instance in the process (a demo trains 12 models on the
# same images): (params, split, index) -> (image, mask); at most _CACHE_BYTES
_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_CACHE_BYTES = 256 * 2**20
_cached_bytes = 0


class FarKeySegmentation(Dataset):
    """Objects labelled by a far-away key (see the module docstring).

    Args:
        num_samples: dataset length.
        image_size: side in pixels (>= 64).
        split: ``train``, ``val`` or ``test`` (disjoint random streams).
        seed: base seed; the same (seed, split, index) always gives the same image.
        transform: joint transform ``(uint8 (3, H, W) image, uint8 (H, W) mask) -> ...``.
        min_distance: the least Chebyshev distance between an object pixel and a key pixel
            (default 36: beyond the 32 pixels the demo's plain network sees around a pixel).
        key_size: the key's side (default: 1/8 of the side).
        max_objects: 1..this many objects per image.
    """

    classes = FAR_KEY_CLASSES
    palette = np.array([(0, 0, 0), (220, 50, 50), (50, 190, 60), (60, 90, 230)], dtype=np.uint8)

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: int = 96,
        split: str = "train",
        seed: int = 0,
        transform=None,
        min_distance: int | None = None,
        key_size: int | None = None,
        max_objects: int = 3,
    ) -> None:
        check_synthetic_args(split, image_size, num_samples, 64)
        self.num_samples, self.image_size, self.split, self.seed = num_samples, image_size, split, seed
        self.transform = transform
        self.min_distance = int(min_distance if min_distance is not None else 36)
        self.key_size = int(key_size if key_size is not None else max(4, image_size // 8))
        self.max_objects = int(max_objects)
        self._radius = (max(4, image_size // 12), max(6, image_size // 7))
        # an object of the largest size must fit beyond the key, min_distance away
        if self.key_size + self.min_distance + 2 * self._radius[1] + 1 > image_size or self.max_objects < 1:
            raise ValueError(f"image_size={image_size} leaves no room for a key {self.key_size} px wide "
                             f"and an object {self.min_distance} px away; use a larger image or a "
                             "smaller min_distance")  # fmt: skip

    def __len__(self) -> int:
        return self.num_samples

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 11, SPLIT_SEED[self.split], index])

    def layout(self, index: int) -> tuple[int, int, list[tuple[str, int, int, int]]]:
        """(key class 1..3, key side 0..3 = top / bottom / left / right, objects
        [(shape, cy, cx, r)]) of ``index``."""
        rng = self._rng(index)
        n, s, d = self.image_size, self.key_size, self.min_distance
        cls = int(rng.integers(1, len(FAR_KEY_CLASSES)))
        side = int(rng.integers(4))
        objects = []
        for _ in range(int(rng.integers(1, self.max_objects + 1))):
            r = int(rng.integers(self._radius[0], self._radius[1] + 1))
            near = s - 1 + d + r  # the least centre coordinate across the key: d from its last row
            across = int(rng.integers(near, n - r))
            along = int(rng.integers(r, n - r))
            if side in (1, 3):  # the key at the far end: mirror
                across = n - 1 - across
            cy, cx = (across, along) if side in (0, 1) else (along, across)
            objects.append(("square" if rng.random() < 0.5 else "disc", cy, cx, r))
        return cls, side, objects

    def key_region(self, side: int) -> tuple[slice, slice]:
        """The key's pixels: a stripe ``key_size`` wide along edge ``side``."""
        n, s = self.image_size, self.key_size
        full = slice(0, n)
        return [(slice(0, s), full), (slice(n - s, n), full), (full, slice(0, s)), (full, slice(n - s, n))][
            side
        ]

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image and (H, W) uint8 mask of ``index`` (read-only arrays,
        rendered once per process)."""
        global _cached_bytes
        key = (
            self.seed,
            self.split,
            index,
            self.image_size,
            self.min_distance,
            self.key_size,
            self.max_objects,
        )
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        img, mask = self._render(index)
        img.setflags(write=False)
        mask.setflags(write=False)
        if _cached_bytes + img.nbytes + mask.nbytes <= _CACHE_BYTES:
            _CACHE[key] = (img, mask)
            _cached_bytes += img.nbytes + mask.nbytes
        return img, mask

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        cls, side, objects = self.layout(index)
        rng = np.random.default_rng([self.seed, 12, SPLIT_SEED[self.split], index])
        n = self.image_size
        img = rng.normal(_BACKGROUND, 20, size=(n, n, 3)).astype(np.float32)
        mask = np.zeros((n, n), dtype=np.uint8)
        yy, xx = np.ogrid[:n, :n]
        for shape, cy, cx, r in objects:
            if shape == "square":
                m = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
            else:
                m = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 0.5) ** 2
            img[m] = rng.normal(_OBJECT, 15, size=(int(m.sum()), 1))  # grey: the same in R, G, B
            mask[m] = cls
        key = self.key_region(side)
        img[key] = _KEY_COLORS[cls - 1] + rng.normal(0, 10, size=img[key].shape)
        mask[key] = cls
        return img.clip(0, 255).astype(np.uint8), mask

    def object_mask(self, index: int) -> np.ndarray:
        """(H, W) bool: the object pixels of ``index``, whose label only the key decides."""
        mask = self.render(index)[1] > 0  # a fresh array
        mask[self.key_region(self.layout(index)[1])] = False
        return mask

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        img, mask = self.render(index)
        return torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous(), torch.from_numpy(mask.copy())

    def __getitem__(self, index: int):
        img, mask = self.load(index)
        if self.transform is not None:
            img, mask = self.transform(img, mask)
        return img, mask


def _objects(img: np.ndarray) -> np.ndarray:
    """Object pixels of an (H, W, 3) uint8 image: bright and grey (a 3x3 majority, so single
    bright noise pixels of the background drop out)."""
    f = img.astype(np.float32)
    bright = (f.min(-1) > 160) & (f.max(-1) - f.min(-1) < 40)
    p = np.pad(bright, 1).astype(np.int32)
    votes = sum(p[1 + dy : p.shape[0] - 1 + dy, 1 + dx : p.shape[1] - 1 + dx]
                for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # fmt: skip
    return votes >= 5


def _key_colours(img: np.ndarray) -> np.ndarray:
    """(H, W) int: 1..3 where one channel stands > 100 above the other two (the key's
    saturated colours), 0 elsewhere."""
    f = img.astype(np.float32)
    others = np.stack([f[..., [1, 2]].max(-1), f[..., [0, 2]].max(-1), f[..., [0, 1]].max(-1)], -1)
    lead = f - others
    return np.where(lead.max(-1) > 100, 1 + lead.argmax(-1), 0)


def oracle_predict(img: np.ndarray) -> np.ndarray:
    """A hand-written solution with global information: find the key (the saturated pixels
    of the whole image, their majority colour), then give the key and every object its class."""
    keys = _key_colours(img)
    cls = 1 + int(np.argmax([(keys == c).sum() for c in (1, 2, 3)]))
    return np.where(_objects(img) | (keys == cls), cls, 0).astype(np.uint8)


def blind_oracle_predict(img: np.ndarray, guess: int = 1) -> np.ndarray:
    """The best a network that cannot see the key from the objects can do: the key's own
    pixels (their colour is local) and the object shapes right, the objects' class chosen
    without the key (``guess``, 1..3)."""
    keys = _key_colours(img)
    return np.where(keys > 0, keys, np.where(_objects(img), guess, 0)).astype(np.uint8)
