"""Classification datasets: ImageFolder trees, CIFAR-10/100, the embedded synthetic set.

Bad data gets a clear error that names the file: a missing root, an empty class folder,
an unreadable image. With ``skip_bad_images`` unreadable images are dropped from their batch
instead and counted (`collate_skip_bad`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate
from torchvision import datasets

from .synthetic import SyntheticContext
from .transforms import build_transforms

__all__ = [
    "BadImageError",
    "ImageFolderChecked",
    "check_image",
    "find_bad_images",
    "build_classification_data",
    "collate_skip_bad",
]

_VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
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


def _undecodable(path: str) -> str:
    if path.lower().endswith(_VIDEO_SUFFIXES):
        return f"{path} is a video, not an image: this model takes images; use a video model for videos"
    return f"cannot read image {path}: not an image file PIL can decode"


def _load_rgb(path: str) -> Image.Image:
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise BadImageError(f"cannot read image {path}: the file is empty (0 bytes)")
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
            return to_rgb(img)
    except UnidentifiedImageError:
        raise BadImageError(_undecodable(path)) from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated, corrupt
        raise BadImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


VERIFY_MODES = ("quick", "full", "off")


def verify_mode(value: str | bool) -> str:
    """``data.verify_images`` as a mode (YAML reads a bare ``off`` as false)."""
    return {False: "off", True: "quick"}.get(value, value) if isinstance(value, bool) else value


def check_image(path: str, mode: str = "quick") -> str | None:
    """Why the image file at ``path`` cannot be read, or None if it can. ``quick``: the header,
    and a JPEG decoded at 1/8 scale (which finds truncated files at a fraction of the cost);
    ``full``: the whole decode a training step does."""
    if mode == "full":
        try:
            _load_rgb(path)
        except BadImageError as e:
            return str(e)
        return None
    if os.path.getsize(path) == 0:
        return f"cannot read image {path}: the file is empty (0 bytes)"
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
            else:
                img.verify()
    except UnidentifiedImageError:
        return _undecodable(path)
    except (OSError, SyntaxError, ValueError) as e:
        return f"cannot read image {path}: {type(e).__name__}: {e}"
    return None


def find_bad_images(paths: list[str], mode: str, progress: bool = True) -> list[tuple[str, str]]:
    """``[(path, why)]`` of the unreadable files among ``paths`` (``mode``: see
    `check_image`; ``off``: none checked)."""
    if mode == "off":
        return []
    from gcnet.utils.progress import progress_bar

    bar = progress_bar(paths, progress and len(paths) > 500, desc=f"checking images ({mode})")
    return [(p, why) for p in bar if (why := check_image(p, mode)) is not None]


class ImageFolderChecked(datasets.ImageFolder):
    """``torchvision.datasets.ImageFolder`` with clear errors, and bad images either raised
    (naming the file) or returned as ``None`` for `collate_skip_bad` to drop.

    ``verify`` (``data.verify_images``): check every file before any training
    (`check_image`): unreadable files stop the run up front, naming them and their
    count, or, with ``skip_bad_images``, leave the dataset and are listed in ``bad_files``
    (an exact count; ``off`` finds bad files only when a batch loads them)."""

    def __init__(self, root: str, transform=None, skip_bad_images: bool = False, verify: str = "off") -> None:
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
        self.bad_files = find_bad_images([p for p, _ in self.samples], verify)
        if self.bad_files and not skip_bad_images:
            shown = "; ".join(why for _, why in self.bad_files[:3])
            more = f" (and {len(self.bad_files) - 3} more)" if len(self.bad_files) > 3 else ""
            raise BadImageError(
                f"{len(self.bad_files)} unreadable image(s) in {root}: {shown}{more}; remove them or set "
                "data.skip_bad_images=true (--skip-bad-images) to train without them"
            )
        if self.bad_files:
            bad = {p for p, _ in self.bad_files}
            self.samples = [s for s in self.samples if s[0] not in bad]
            self.imgs, self.targets = self.samples, [t for _, t in self.samples]

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
        made = _missing_ancestor(root)
        try:
            ds = cls(root, train=train, transform=tf, download=bool(d["download"]))
        except RuntimeError as e:  # "Dataset not found or corrupted"
            raise FileNotFoundError(f"{name} not found under {root} ({e}); set data.download=true") from None
        except OSError as e:  # URLError, no route, DNS, disk: one line, what to do instead
            reason = getattr(e, "reason", None) or e.strerror or e
            if made and not any(files for _, _, files in os.walk(made)):
                shutil.rmtree(made, ignore_errors=True)  # the folders the failed download made
            raise FileNotFoundError(
                f"cannot download {name} from {cls.url} ({reason}); download it where the network is "
                f"reachable and place {cls.filename} (or its extracted {cls.base_folder}/) in {root}"
            ) from None
        return ds, list(ds.classes)
    sub = d["train_split"] if train else d["val_split"]
    root = os.path.join(d["root"], sub)
    ds = ImageFolderChecked(root, tf, skip_bad_images=bool(d["skip_bad_images"]),
                            verify=verify_mode(d.get("verify_images", "off")))  # fmt: skip
    return ds, list(ds.classes)


def _missing_ancestor(path: str) -> str | None:
    """The outermost folder of ``path`` that does not exist yet (None if ``path`` exists)."""
    path, top = os.path.abspath(path), None
    while not os.path.exists(path):
        top, path = path, os.path.dirname(path)
    return top


def load_image(path: str) -> Image.Image:
    """A user's image file as RGB; a missing file is a `FileNotFoundError` naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    return _load_rgb(path)
