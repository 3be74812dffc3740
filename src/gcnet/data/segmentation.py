"""Semantic segmentation datasets in their real on-disk layouts, and the embedded synthetic
set.

- `Cityscapes`: ``<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``<root>/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (19 classes; make the trainId
  masks with cityscapesscripts' ``createTrainIdLabelImgs``).
- `VOCSegmentation`: ``<root>/JPEGImages``, ``SegmentationClass`` (palette PNGs),
  ``ImageSets/Segmentation/<split>.txt``; the ``train_aug`` split adds the SBD images listed
  in ``ImageSets/Segmentation/aug.txt`` with masks in ``SegmentationClassAug`` (mmseg's
  layout). 21 classes, the white border is 255 (ignored).
- `ADE20K`: ``<root>/images/{training,validation}/*.jpg`` and
  ``<root>/annotations/.../*.png``; 150 classes, label 0 ("other") -> ignore, k -> k-1.
- `CustomSegmentation` (``data.dataset: custom``): your own images and label PNGs
  with your class names (``data.seg.classes`` or ``<root>/classes.txt``) and colours: an
  ``images/<split>`` + ``masks/<split>`` tree (or ``annotations/``, ``labels/``,
  ``img_dir/`` + ``ann_dir/``), a VOC-style tree (``JPEGImages``, ``SegmentationClass``,
  split lists), or explicit folders / split lists (mmseg's ``img_dir`` / ``ann_dir`` /
  ``img_suffix`` / ``seg_map_suffix`` / ``ann_file``).
- `SyntheticSegmentation`: generated from a seed, no files (see its docstring).
- ``far_key``: `gcnet.data.context_demo.FarKeySegmentation`, the demo's set where
  every object is labelled by a key beyond a plain network's receptive field.

Items are ``(image, mask)`` after the joint transform (float (3, H, W), int64 (H, W));
pixels labelled ``ignore_index`` count nowhere: the files' ignore value
(``data.seg.ignore_index``, 255 by default) becomes 255 when a mask is read, so everything
downstream (crop, padding, loss, metrics) ignores 255.
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
    "CustomSegmentation",
    "SegmentationFiles",
    "SyntheticSegmentation",
    "VOCSegmentation",
    "VOC_CLASSES",
    "build_segmentation_data",
    "color_palette",
    "read_classes_file",
    "seg_classes_from_config",
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
        ignore_index: the mask value that counts nowhere, as stored in the files (it becomes
            255 when a mask is read).
    """

    def __init__(self, pairs, classes, palette=None, transform=None, reduce_zero_label: bool = False,
                 ignore_index: int = IGNORE_INDEX) -> None:  # fmt: skip
        if not pairs:
            raise FileNotFoundError("no (image, mask) pairs found")
        self.pairs = list(pairs)
        self.classes = tuple(classes)
        n = len(self.classes)
        if not 1 <= n <= IGNORE_INDEX:
            raise ValueError(f"a segmentation set needs 1 to {IGNORE_INDEX} classes, got {n}")
        self.palette = np.asarray(palette if palette is not None else color_palette(n), np.uint8)
        if self.palette.shape != (n, 3):
            raise ValueError(f"the palette holds {len(self.palette)} colours for {n} classes; give one "
                             "[R, G, B] per class")  # fmt: skip
        self.transform = transform
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = int(ignore_index)
        labels = range(1, n + 1) if reduce_zero_label else range(n)
        if self.ignore_index in labels:
            raise ValueError(f"data.seg.ignore_index={self.ignore_index} is also the label of class "
                             f"{self.classes[self.ignore_index - labels[0]]!r} (mask values {labels[0]}.."
                             f"{labels[-1]} are the {n} classes)")  # fmt: skip

    def __len__(self) -> int:
        return len(self.pairs)

    def read_mask(self, mask_path: str) -> np.ndarray:
        """The labels of a mask file: the ignore value -> 255, zero label reduced, every other
        value checked against the classes (an error naming the file and the value)."""
        raw = _load_mask(mask_path)
        m = raw.astype(np.int64)
        ignore = m == self.ignore_index
        if self.reduce_zero_label:
            ignore |= m == 0
            m = m - 1
        bad = ~ignore & ((m < 0) | (m >= len(self.classes)))
        if bad.any():
            values = sorted(set(np.unique(raw[bad]).tolist()))
            n, first = len(self.classes), 1 if self.reduce_zero_label else 0
            names = ", ".join(self.classes[:5]) + (", ..." if n > 5 else "")
            raise BadImageError(
                f"mask {mask_path} has label(s) {values[:10]} outside {first}..{first + n - 1} ({n} classes: "
                f"{names}; {self.ignore_index} = ignore, data.seg.ignore_index)"
            )
        m[ignore] = IGNORE_INDEX
        return m.astype(np.uint8)

    def check_masks(self, num: int = 8) -> dict[str, tuple[int, int]]:
        """Read ``num`` masks spread over the set (the first and the last included) and raise
        on a label outside the classes, before any training: a cheap up-front check. Returns
        their (H, W) by path."""
        n, m = len(self.pairs), min(num, len(self.pairs))
        idx = sorted({round(k * (n - 1) / max(m - 1, 1)) for k in range(m)})
        return {self.pairs[i][1]: self.read_mask(self.pairs[i][1]).shape for i in idx}

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw (uint8 (3, H, W) image, uint8 (H, W) mask) of ``index``, labels mapped."""
        img_path, mask_path = self.pairs[index]
        img = np.asarray(_load_rgb(img_path))
        mask = self.read_mask(mask_path)
        if mask.shape != img.shape[:2]:
            raise BadImageError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {img_path} is "
                f"{img.shape[1]}x{img.shape[0]}"
            )
        return torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)

    def __getitem__(self, index: int):
        img, mask = self.load(index)
        if self.transform is not None:
            img, mask = self.transform(img, mask)
        return img, mask


def _need_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path}")


class Cityscapes(SegmentationFiles):
    """``classes`` / ``palette`` rename the trainIds (a tree with your own fewer classes);
    ``ignore_index``: the masks' ignore value."""

    def __init__(self, root: str, split: str = "train", transform=None, classes=None, palette=None,
                 ignore_index: int = IGNORE_INDEX) -> None:  # fmt: skip
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
        if classes is None:
            classes, palette = CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
        super().__init__(pairs, classes, palette, transform, ignore_index=ignore_index)


class VOCSegmentation(SegmentationFiles):
    """``classes`` / ``palette``: a VOC-layout tree with your own classes (default: VOC's 21);
    ``ignore_index``: the masks' ignore value."""

    def __init__(self, root: str, split: str = "train", transform=None, classes=None, palette=None,
                 ignore_index: int = IGNORE_INDEX) -> None:  # fmt: skip
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
        classes = VOC_CLASSES if classes is None else classes
        super().__init__(pairs, classes, palette, transform, ignore_index=ignore_index)


class ADE20K(SegmentationFiles):
    """Label 0 ("other") is ignored, k -> k - 1; ``classes`` / ``palette``: an ADE-layout
    tree with your own classes (mask values 1..N)."""

    def __init__(self, root: str, split: str = "train", transform=None, classes=None, palette=None,
                 ignore_index: int = IGNORE_INDEX) -> None:  # fmt: skip
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
        if classes is None:
            classes, palette = ADE20K_CLASSES, color_palette(151)[1:]
        super().__init__(pairs, classes, palette, transform, True, ignore_index)


IMG_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: (image folder, mask folder) pairs of the layouts `CustomSegmentation` recognises
FOLDER_PAIRS = (
    ("images", "masks"),
    ("images", "annotations"),
    ("images", "labels"),
    ("img_dir", "ann_dir"),
    ("JPEGImages", "SegmentationClass"),
)
#: split lists looked for (relative to the root) when the folders have no split subfolders
SPLIT_LISTS = ("ImageSets/Segmentation/{split}.txt", "splits/{split}.txt", "{split}.txt")
_SPLIT_ALIASES = {"train": ("training",), "val": ("validation",), "training": ("train",),
                  "validation": ("val",)}  # fmt: skip


def _under(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


def read_classes_file(path: str) -> tuple[list[str], np.ndarray | None]:
    """Class names (and colours) from a text file: one class per line, ``name`` or
    ``name R G B`` (the colours all given or none); blank lines and ``#`` comments skipped."""
    names, colors = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(",", " ").split()
            rgb = parts[-3:] if len(parts) >= 4 else []
            if rgb and all(p.isdigit() and int(p) <= 255 for p in rgb):
                names.append(" ".join(line.replace(",", " ").split()[:-3]))
                colors.append([int(p) for p in rgb])
            else:
                names.append(line)
    if not names:
        raise ValueError(f"{path} names no classes (one class name per line, optionally followed by R G B)")
    if colors and len(colors) != len(names):
        raise ValueError(f"{path}: give a colour (name R G B) on every line or on none "
                         f"({len(colors)} of {len(names)} lines have one)")  # fmt: skip
    return names, (np.asarray(colors, np.uint8) if colors else None)


def seg_classes_from_config(d: Mapping[str, Any]) -> tuple[list[str] | None, np.ndarray | None]:
    """(class names, palette) that the config ``data`` section gives: ``data.seg.classes`` (a
    list, or a file relative to ``data.root``), else ``<root>/classes.txt`` for
    ``data.dataset=custom``; ``data.seg.palette`` overrides the file's colours. (None, None)
    when the config names no classes (a built-in dataset's own)."""
    s, root = d["seg"], d.get("root") or ""
    classes, palette = s.get("classes"), None
    default_file = os.path.join(root, "classes.txt") if root else ""
    if isinstance(classes, str):
        classes, palette = read_classes_file(_under(root, classes))
    elif classes is None and d["dataset"] == "custom" and default_file and os.path.isfile(default_file):
        classes, palette = read_classes_file(default_file)
    if s.get("palette") is not None:
        palette = np.asarray(s["palette"], np.uint8)
    if classes is not None:
        classes = [str(c) for c in classes]
        if palette is not None and len(palette) != len(classes):
            raise ValueError(f"data.seg.palette holds {len(palette)} colours for {len(classes)} classes "
                             f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})")  # fmt: skip
    return classes, palette


class CustomSegmentation(SegmentationFiles):
    """Your own images and label PNGs (``data.dataset: custom``), in any of these layouts
    under ``root`` (the first that exists for the split wins):

    - ``images/<split>/`` + ``masks/<split>/`` (or ``annotations/``, ``labels/``;
      ``img_dir/`` + ``ann_dir/``; ``<split>/images/`` + ``<split>/masks/``; ADE20K's
      ``training`` / ``validation`` for ``train`` / ``val``), every image paired with the
      mask of the same relative name: ``<stem><seg_map_suffix>``;
    - flat folders (``images/`` + ``masks/``, VOC's ``JPEGImages/`` +
      ``SegmentationClass/``) and a split list of stems: ``ImageSets/Segmentation/<split>.txt``,
      ``splits/<split>.txt`` or ``<split>.txt``;
    - explicit ``img_dir`` / ``ann_dir`` (relative to ``root`` or absolute, ``{split}`` replaced
      by the split; a ``<split>/`` subfolder of them is used when there is one) and an
      optional ``split_list`` (one stem per line, or ``image mask`` paths relative to the root).

    ``img_suffix`` None takes any of `IMG_SUFFIXES`. A mask is a single-channel PNG
    (L or P: its indices, not its colours) of labels 0..N-1 (1..N with
    ``reduce_zero_label``) and ``ignore_index``.
    """

    def __init__(self, root: str, split: str, classes: Sequence[str], palette=None, transform=None,
                 img_dir: str | None = None, ann_dir: str | None = None, img_suffix: str | None = None,
                 seg_map_suffix: str = ".png", split_list: str | None = None,
                 ignore_index: int = IGNORE_INDEX, reduce_zero_label: bool = False) -> None:  # fmt: skip
        _need_dir(root, "data.root")
        voc = os.path.join(root, "VOC2012")
        if os.path.isdir(voc) and not os.path.isdir(os.path.join(root, "JPEGImages")):
            root = voc
        self.root, self.split = root, split
        self.img_suffixes = (img_suffix,) if img_suffix else IMG_SUFFIXES
        self.seg_map_suffix = seg_map_suffix
        images, masks, lst = self._layout(img_dir, ann_dir, split_list)
        self.img_dir, self.ann_dir, self.split_list = images, masks, lst
        pairs = self._pairs_from_list(lst) if lst else self._pairs_from_folders()
        if not pairs:
            where = lst or f"{images} (suffix {'/'.join(self.img_suffixes)})"
            raise FileNotFoundError(f"no images for split {split!r} in {where}")
        super().__init__(pairs, classes, palette, transform, reduce_zero_label, ignore_index)

    def _layout(self, img_dir, ann_dir, split_list) -> tuple[str, str, str | None]:
        root, split = self.root, self.split
        lst = _under(root, split_list.format(split=split)) if split_list else None
        if lst and not os.path.isfile(lst):
            raise FileNotFoundError(f"split list not found: {lst}")
        if img_dir or ann_dir:
            if not (img_dir and ann_dir):
                raise ValueError("give both data.seg.img_dir and data.seg.ann_dir (or neither)")
            found = []
            for d, what in ((img_dir, "image"), (ann_dir, "mask")):
                path = _under(root, d.format(split=split))
                if "{split}" not in d and not lst and os.path.isdir(os.path.join(path, split)):
                    path = os.path.join(path, split)
                _need_dir(path, f"{what} folder (data.seg.{'img' if what == 'image' else 'ann'}_dir)")
                found.append(path)
            return found[0], found[1], lst
        for s in () if lst else (split, *_SPLIT_ALIASES.get(split, ())):
            for i, a in FOLDER_PAIRS:
                for pi, pa in ((os.path.join(root, i, s), os.path.join(root, a, s)),
                               (os.path.join(root, s, i), os.path.join(root, s, a))):  # fmt: skip
                    if os.path.isdir(pi) and os.path.isdir(pa):
                        return pi, pa, None
        lists = [lst] if lst else [os.path.join(root, t.format(split=split)) for t in SPLIT_LISTS]
        for i, a in FOLDER_PAIRS:
            if os.path.isdir(os.path.join(root, i)) and os.path.isdir(os.path.join(root, a)):
                for candidate in lists:
                    if os.path.isfile(candidate):
                        return os.path.join(root, i), os.path.join(root, a), candidate
        s = split
        raise FileNotFoundError(
            f"no images + masks for split {s!r} under {root}: looked for images/{s} + masks/{s} (or "
            f"annotations/{s}, labels/{s}), img_dir/{s} + ann_dir/{s}, {s}/images + {s}/masks, and folders "
            f"images + masks or JPEGImages + SegmentationClass with a split list "
            f"({', '.join(t.format(split=s) for t in SPLIT_LISTS)}); set data.seg.img_dir and "
            "data.seg.ann_dir (and data.seg.train_list / val_list)"
        )

    def _mask_of(self, rel_stem: str) -> str:
        return os.path.join(self.ann_dir, rel_stem + self.seg_map_suffix)

    def _pairs_from_folders(self) -> list[tuple[str, str]]:
        suffixes = tuple(x.lower() for x in self.img_suffixes)
        pairs, missing = [], []
        for dirpath, dirnames, files in os.walk(self.img_dir):
            dirnames.sort()
            for name in sorted(files):
                if not name.lower().endswith(suffixes):
                    continue
                img = os.path.join(dirpath, name)
                rel = os.path.relpath(img, self.img_dir)
                stem = next(rel[: -len(x)] for x in suffixes if rel.lower().endswith(x))
                mask = self._mask_of(stem)
                (pairs if os.path.isfile(mask) else missing).append((img, mask))
        if missing:
            img, mask = missing[0]
            raise FileNotFoundError(f"{len(missing)} of {len(pairs) + len(missing)} images in {self.img_dir} "
                                    f"have no mask: e.g. {mask} for {img} (data.seg.seg_map_suffix="
                                    f"{self.seg_map_suffix!r})")  # fmt: skip
        return pairs

    def _pairs_from_list(self, lst: str) -> list[tuple[str, str]]:
        with open(lst, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        pairs = []
        for ln in lines:
            parts = ln.split()
            if len(parts) == 2 and parts[1].lower().endswith(self.seg_map_suffix.lower()):
                img, mask = (os.path.join(self.root, p.lstrip("/")) for p in parts)
                pairs.append((img, mask))
                continue
            stem = ln
            img = next((os.path.join(self.img_dir, stem + x) for x in self.img_suffixes
                        if os.path.isfile(os.path.join(self.img_dir, stem + x))), None)  # fmt: skip
            if img is None:
                raise FileNotFoundError(f"{lst} lists {stem!r} but {os.path.join(self.img_dir, stem)}"
                                        f"{{{','.join(self.img_suffixes)}}} does not exist")  # fmt: skip
            pairs.append((img, self._mask_of(stem)))
        for img, mask in pairs:
            for p in (img, mask):
                if not os.path.isfile(p):
                    raise FileNotFoundError(f"{lst} lists a file that is missing: {p}")
        return pairs


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


SEG_DATASETS = ("synthetic", "far_key", "cityscapes", "voc", "ade20k", "custom")


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
    s = d["seg"]
    sub = d["train_split"] if train else d["val_split"]
    classes, palette = seg_classes_from_config(d)
    ignore = int(s.get("ignore_index", IGNORE_INDEX))
    if name == "custom":
        if classes is None:
            raise ValueError(
                f"data.dataset=custom needs its class names: data.seg.classes: [background, cat, ...] (mask "
                f"value i = the i-th name) or {os.path.join(d['root'], 'classes.txt')} (one name per line, "
                "optionally followed by R G B)"
            )
        ds = CustomSegmentation(d["root"], sub, classes, palette, tf, img_dir=s.get("img_dir"),
                                ann_dir=s.get("ann_dir"), img_suffix=s.get("img_suffix"),
                                seg_map_suffix=s.get("seg_map_suffix") or ".png",
                                split_list=s.get("train_list" if train else "val_list"), ignore_index=ignore,
                                reduce_zero_label=bool(s.get("reduce_zero_label")))  # fmt: skip
    else:
        cls = {"cityscapes": Cityscapes, "voc": VOCSegmentation, "ade20k": ADE20K}[name]
        ds = cls(d["root"], sub, tf, classes=classes, palette=palette, ignore_index=ignore)
    if name == "custom" or classes is not None:
        sizes = ds.check_masks()  # your labels against your classes, before any training
        batch, key = (cfg["train"]["batch_size"], "train.batch_size") if train else (
            cfg["eval"]["batch_size"], "eval.batch_size")  # fmt: skip
        if len(set(sizes.values())) > 1 and int(batch) > 1 and not (train and s["crop_size"]):
            first: dict[tuple[int, int], str] = {}
            for path, size in sizes.items():
                first.setdefault(size, path)
            (sa, a), (sb, b) = list(first.items())[:2]
            need = "data.seg.crop_size=[h, w]" if train else f"{key}=1"
            raise ValueError(
                f"the {split} images (masks) have different sizes ({a}: {sa[1]}x{sa[0]}, {b}: "
                f"{sb[1]}x{sb[0]}): batches of {key}={batch} need {need}"
            )
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
