"""Classification datasets: ImageFolder trees, CIFAR-10/100, the embedded synthetic set.

Bad data gets a clear error that names the file: a missing root, an empty class folder,
an unreadable image. With ``skip_bad_images`` unreadable images are dropped from their batch
instead and counted (:func:`collate_skip_bad`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate
from torchvision import datasets

from .synthetic import SyntheticContext
from .transforms import build_transforms

__all__ = ["BadImageError", "ImageFolderChecked", "build_classification_data", "collate_skip_bad"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class BadImageError(ValueError):
    """An image file that cannot be read."""


def to_rgb(img: Image.Image) -> Image.Image:
    """An image as users have them -> 8-bit RGB as shown: EXIF orientation applied; grayscale,
    palette, CMYK converted; 16-bit and 32-bit grayscale scaled to 8 bits (not clipped); alpha
    (RGBA, LA, palette transparency) composited on white."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def _load_rgb(path: str) -> Image.Image:
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise BadImageError(f"cannot read image {path}: the file is empty (0 bytes)")
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
            return to_rgb(img)
    except UnidentifiedImageError:
        raise BadImageError(f"cannot read image {path}: not an image file PIL can decode") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated, corrupt
        raise BadImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


class ImageFolderChecked(datasets.ImageFolder):
    """``torchvision.datasets.ImageFolder`` with clear errors, and bad images either raised
    (naming the file) or returned as ``None`` for :func:`collate_skip_bad` to drop."""

    def __init__(self, root: str, transform=None, skip_bad_images: bool = False) -> None:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder not found: {root}")
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        if not classes:
            raise FileNotFoundError(f"no class folders in {root} (expected {root}/<class>/<image>)")
        empty = [
            c for c in classes
            if not any(f.lower().endswith(IMG_EXTENSIONS) for _, _, fs in os.walk(os.path.join(root, c))
                       for f in fs)
        ]  # fmt: skip
        if empty:
            raise FileNotFoundError(f"class folder(s) with no images in {root}: {empty}")
        super().__init__(root, transform=transform, loader=_load_rgb)
        self.skip_bad_images = skip_bad_images

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            img = self.loader(path)
        except BadImageError:
            if self.skip_bad_images:
                return None
            raise
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def collate_skip_bad(batch):
    """Collate, dropping ``None`` items; returns (images, targets, number skipped)."""
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return None, None, skipped
    images, targets = default_collate(good)
    return images, targets, skipped


def build_classification_data(cfg: Mapping[str, Any], split: str) -> tuple[Dataset, list[str]]:
    """(dataset, class names) for ``split`` in {"train", "val"}."""
    d = cfg["data"]
    train = split == "train"
    name = d["dataset"]
    if name == "synthetic":
        tf = build_transforms(d, train, tensor_input=True)
        n = d["train_size"] if train else d["val_size"]
        ds = SyntheticContext(n, d["image_size"], "train" if train else "val", d["seed"], tf)
        return ds, list(ds.classes)
    tf = build_transforms(d, train)
    if name in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        root = d["root"] or os.path.join("data", name)
        try:
            ds = cls(root, train=train, transform=tf, download=bool(d["download"]))
        except RuntimeError as e:  # "Dataset not found or corrupted"
            raise FileNotFoundError(f"{name} not found under {root} ({e}); set data.download=true") from None
        return ds, list(ds.classes)
    sub = d["train_split"] if train else d["val_split"]
    root = os.path.join(d["root"], sub)
    ds = ImageFolderChecked(root, tf, skip_bad_images=bool(d["skip_bad_images"]))
    return ds, list(ds.classes)


def load_image(path: str) -> Image.Image:
    """A user's image file as RGB; a missing file is a :class:`FileNotFoundError` naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    return _load_rgb(path)
