"""Semantic segmentation datasets in their real on-disk layouts, and the embedded synthetic
set.

- :class:`Cityscapes`: ``<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``<root>/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (19 classes; make the trainId
  masks with cityscapesscripts' ``createTrainIdLabelImgs``).
- :class:`VOCSegmentation`: ``<root>/JPEGImages``, ``SegmentationClass`` (palette PNGs),
  ``ImageSets/Segmentation/<split>.txt``; the ``train_aug`` split adds the SBD images listed
  in ``ImageSets/Segmentation/aug.txt`` with masks in ``SegmentationClassAug`` (mmseg's
  layout). 21 classes, the white border is 255 (ignored).
- :class:`ADE20K`: ``<root>/images/{training,validation}/*.jpg`` and
  ``<root>/annotations/.../*.png``; 150 classes, label 0 ("other") -> ignore, k -> k-1.
- :class:`SyntheticSegmentation`: generated from a seed, no files (see its docstring).
- ``far_key``: :class:`gcnet.data.context_demo.FarKeySegmentation`, the demo's set where
  every object is labelled by a key beyond a plain network's receptive field.

Items are ``(image, mask)`` after the joint transform (float (3, H, W), int64 (H, W));
pixels labelled ``ignore_index`` (255) count nowhere.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .datasets import BadImageError, _load_rgb
from .seg_transforms import (
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomRescale,
    Rescale,
    SegCompose,
)
from .synthetic import SPLIT_SEED, check_synthetic_args

__all__ = [
    "ADE20K",
    "CITYSCAPES_CLASSES",
    "Cityscapes",
    "SegmentationFiles",
    "SyntheticSegmentation",
    "VOCSegmentation",
    "VOC_CLASSES",
    "build_segmentation_data",
    "color_palette",
]

IGNORE_INDEX = 255

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)  # fmt: skip
assert len(ADE20K_CLASSES) == 150
SYNTHETIC_SEG_CLASSES = ("background", "red_cue", "green_cue", "blue_cue")


def color_palette(n: int) -> np.ndarray:
    """PASCAL VOC's colour map (bit-interleaved), (n, 3) uint8; class i gets colour i."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def _load_mask(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            m = Image.open(f)
            m.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise BadImageError(f"cannot read mask {path}: {type(e).__name__}: {e}") from None
    if m.mode not in ("P", "L", "I", "I;16"):
        raise BadImageError(f"mask {path} is a {m.mode} image; expected a single-channel label PNG (P or L)")
    return np.asarray(m, dtype=np.int64 if m.mode.startswith("I") else np.uint8)


class SegmentationFiles(Dataset):
    """(image, mask) file pairs with a joint transform.

    Args:
        pairs: ``[(image_path, mask_path), ...]``.
        classes: class names (label i = classes[i]).
        palette: (num_classes, 3) colours for visualisation.
        transform: joint transform ``(uint8 image, uint8 mask) -> (image, mask)``.
        reduce_zero_label: label 0 -> ignore, k -> k - 1 (ADE20K).
    """

    def __init__(self, pairs, classes, palette=None, transform=None, reduce_zero_label: bool = False) -> None:
        if not pairs:
            raise FileNotFoundError("no (image, mask) pairs found")
        self.pairs = list(pairs)
        self.classes = tuple(classes)
        self.palette = np.asarray(palette if palette is not None else color_palette(len(classes)), np.uint8)
        self.transform = transform
        self.reduce_zero_label = reduce_zero_label

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw (uint8 (3, H, W) image, uint8 (H, W) mask) of ``index``, labels mapped."""
        img_path, mask_path = self.pairs[index]
        img = np.asarray(_load_rgb(img_path))
        mask = _load_mask(mask_path)
        if mask.shape != img.shape[:2]:
            raise BadImageError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {img_path} is "
                f"{img.shape[1]}x{img.shape[0]}"
            )
        if self.reduce_zero_label:
            m = mask.astype(np.int64)
            m = np.where(m == 0, IGNORE_INDEX, m - 1)
            mask = np.where(m == IGNORE_INDEX - 1, IGNORE_INDEX, m).astype(np.uint8)
        bad = (mask >= len(self.classes)) & (mask != IGNORE_INDEX)
        if bad.any():
            raise BadImageError(
                f"mask {mask_path} has label(s) {sorted(set(np.unique(mask[bad]).tolist()))[:10]} outside "
                f"0..{len(self.classes) - 1} (and {IGNORE_INDEX} = ignore)"
            )
        return torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous(), torch.from_numpy(
            mask.astype(np.uint8)
        )

    def __getitem__(self, index: int):
        img, mask = self.load(index)
        if self.transform is not None:
            img, mask = self.transform(img, mask)
        return img, mask


def _need_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path}")


class Cityscapes(SegmentationFiles):
    def __init__(self, root: str, split: str = "train", transform=None) -> None:
        img_dir = os.path.join(root, "leftImg8bit", split)
        ann_dir = os.path.join(root, "gtFine", split)
        _need_dir(img_dir, "Cityscapes images")
        _need_dir(ann_dir, "Cityscapes annotations")
        imgs = sorted(glob.glob(os.path.join(img_dir, "*", "*_leftImg8bit.png")))
        if not imgs:
            raise FileNotFoundError(f"no */*_leftImg8bit.png under {img_dir}")
        pairs = []
        for p in imgs:
            rel = os.path.relpath(p, img_dir).replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
            m = os.path.join(ann_dir, rel)
            if not os.path.isfile(m):
                raise FileNotFoundError(
                    f"mask {m} missing for {p} (create the *_labelTrainIds.png masks with "
                    "cityscapesscripts' createTrainIdLabelImgs)"
                )
            pairs.append((p, m))
        super().__init__(pairs, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, transform)


class VOCSegmentation(SegmentationFiles):
    def __init__(self, root: str, split: str = "train", transform=None) -> None:
        if os.path.isdir(os.path.join(root, "VOC2012")):
            root = os.path.join(root, "VOC2012")
        _need_dir(os.path.join(root, "JPEGImages"), "VOC JPEGImages")
        parts = (
            [("train", "SegmentationClass"), ("aug", "SegmentationClassAug")]
            if split == "train_aug"
            else [(split, "SegmentationClass")]
        )
        pairs, seen = [], set()
        for list_name, ann in parts:
            lst = os.path.join(root, "ImageSets", "Segmentation", f"{list_name}.txt")
            if not os.path.isfile(lst):
                raise FileNotFoundError(f"VOC split list not found: {lst}")
            with open(lst) as f:
                ids = [ln.strip() for ln in f if ln.strip()]
            for i in ids:
                if i in seen:
                    continue
                seen.add(i)
                pairs.append(
                    (os.path.join(root, "JPEGImages", f"{i}.jpg"), os.path.join(root, ann, f"{i}.png"))
                )
        for img, mask in pairs:
            for p in (img, mask):
                if not os.path.isfile(p):
                    raise FileNotFoundError(f"VOC file listed but missing: {p}")
        super().__init__(pairs, VOC_CLASSES, color_palette(21), transform)


class ADE20K(SegmentationFiles):
    def __init__(self, root: str, split: str = "train", transform=None) -> None:
        sub = {"train": "training", "val": "validation"}.get(split, split)
        img_dir, ann_dir = os.path.join(root, "images", sub), os.path.join(root, "annotations", sub)
        _need_dir(img_dir, "ADE20K images")
        _need_dir(ann_dir, "ADE20K annotations")
        imgs = sorted(glob.glob(os.path.join(img_dir, "*.jpg")))
        if not imgs:
            raise FileNotFoundError(f"no *.jpg under {img_dir}")
        pairs = []
        for p in imgs:
            m = os.path.join(ann_dir, os.path.basename(p)[:-4] + ".png")
            if not os.path.isfile(m):
                raise FileNotFoundError(f"mask {m} missing for {p}")
            pairs.append((p, m))
        super().__init__(pairs, ADE20K_CLASSES, color_palette(151)[1:], transform, reduce_zero_label=True)


class SyntheticSegmentation(Dataset):
    """Embedded segmentation set where a *global cue* decides each region's class.

    Every image holds 1-3 objects (squares / discs) drawn in the same light grey texture, and
    a coloured stripe (red, green or blue) along one random edge, away from the objects.
    Every object pixel's class is the stripe's colour (``red_cue``/``green_cue``/
    ``blue_cue``); the rest is ``background`` (the stripe too). Locally an object looks the
    same whatever its class: the network must relate each object to the cue elsewhere in the
    image, which a global context block does in one step. Generated from
    ``(seed, split, index)``.
    """

    classes = SYNTHETIC_SEG_CLASSES
    palette = np.array([(0, 0, 0), (220, 50, 50), (50, 180, 60), (60, 90, 230)], dtype=np.uint8)

    def __init__(self, num_samples: int = 1000, image_size: int = 64, split: str = "train", seed: int = 0,
                 transform=None) -> None:  # fmt: skip
        check_synthetic_args(split, image_size, num_samples, 32)
        self.num_samples, self.image_size, self.split, self.seed = num_samples, image_size, split, seed
        self.transform = transform

    def __len__(self) -> int:
        return self.num_samples

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 7, SPLIT_SEED[self.split], index])
        n = self.image_size
        img = rng.normal(110, 25, size=(n, n, 3)).clip(0, 255)
        mask = np.zeros((n, n), dtype=np.uint8)
        cls = int(rng.integers(1, 4))
        yy, xx = np.ogrid[:n, :n]
        w = max(3, n // 10)
        for _ in range(int(rng.integers(1, 4))):
            r = int(rng.integers(n // 8, n // 4 + 1))
            cy, cx = (int(v) for v in rng.integers(w + r + 1, n - w - r - 1, size=2))
            if rng.random() < 0.5:
                shape = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
            else:
                shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[shape] = (rng.normal(200, 20, size=(int(shape.sum()), 1))).clip(0, 255)
            mask[shape] = cls
        # the cue: a coloured stripe along one edge of the image (objects never reach it)
        w = max(3, n // 10)
        side = int(rng.integers(4))
        cue = np.zeros((n, n), dtype=bool)
        if side == 0:
            cue[:w] = True
        elif side == 1:
            cue[-w:] = True
        elif side == 2:
            cue[:, :w] = True
        else:
            cue[:, -w:] = True
        img[cue] = self.palette[cls] + rng.normal(0, 10, size=(int(cue.sum()), 3))
        mask[cue] = 0
        return img.clip(0, 255).astype(np.uint8), mask

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        img, mask = self.render(index)
        return torch.from_numpy(img).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)

    def __getitem__(self, index: int):
        img, mask = self.load(index)
        if self.transform is not None:
            img, mask = self.transform(img, mask)
        return img, mask


def build_seg_transform(data_cfg: Mapping[str, Any], train: bool) -> SegCompose:
    s = data_cfg["seg"]
    ops: list = []
    if train:
        if s["ratio_range"]:
            ops.append(RandomRescale(s["scale"], s["ratio_range"]))
        if s["crop_size"]:
            ops.append(RandomCrop(s["crop_size"], s["cat_max_ratio"], IGNORE_INDEX))
        if data_cfg["augment"]["hflip"]:
            ops.append(RandomFlip(0.5))
        if s["photometric"]:
            ops.append(PhotoMetricDistortion())
    elif s["test_scale"]:
        ops.append(Rescale(s["test_scale"]))
    ops.append(Normalize(data_cfg["mean"], data_cfg["std"]))
    if train and s["crop_size"]:
        ops.append(Pad(s["crop_size"], IGNORE_INDEX))
    return SegCompose(ops)


SEG_DATASETS = ("synthetic", "far_key", "cityscapes", "voc", "ade20k")


def build_segmentation_data(cfg: Mapping[str, Any], split: str) -> tuple[Dataset, list[str]]:
    """(dataset, class names) for ``split`` in {"train", "val"}."""
    d = cfg["data"]
    train = split == "train"
    tf = build_seg_transform(d, train)
    name = d["dataset"]
    if name in ("synthetic", "far_key"):
        from .context_demo import FarKeySegmentation

        n = d["train_size"] if train else d["val_size"]
        cls = SyntheticSegmentation if name == "synthetic" else FarKeySegmentation
        ds: Dataset = cls(n, d["image_size"], "train" if train else "val", d["seed"], tf)
        return ds, list(cls.classes)
    if name not in SEG_DATASETS:
        raise ValueError(
            f"data.dataset={name!r} is not a segmentation dataset; expected one of {SEG_DATASETS}"
        )
    if not d["root"]:
        raise ValueError(f"data.root is required for data.dataset={name}")
    sub = d["train_split"] if train else d["val_split"]
    cls = {"cityscapes": Cityscapes, "voc": VOCSegmentation, "ade20k": ADE20K}[name]
    ds = cls(d["root"], sub, tf)
    return ds, list(ds.classes)


def palette_for(ds: Dataset, num_classes: int) -> np.ndarray:
    pal = getattr(ds, "palette", None)
    return np.asarray(pal, np.uint8) if pal is not None else color_palette(num_classes)


def colorize(mask: np.ndarray, palette: np.ndarray | Sequence) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours; ignore (255) -> white."""
    pal = np.zeros((256, 3), np.uint8)
    pal[IGNORE_INDEX] = 255
    p = np.asarray(palette, np.uint8)
    pal[: len(p)] = p
    return pal[np.asarray(mask, np.int64).clip(0, 255)]
