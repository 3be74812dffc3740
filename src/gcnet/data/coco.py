"""COCO-format detection / instance segmentation data through pycocotools, an aspect-ratio
grouped batch sampler, and the embedded synthetic COCO set (written to disk in the real
format, then read back through the same reader).

Items are ``(image, target)``: a float (3, H, W) image in [0, 1] (torchvision's detectors
normalise and resize inside the model) and a dict with ``boxes`` (x1, y1, x2, y2), ``labels``
(1..K, contiguous; 0 is background), ``masks`` (N, H, W) uint8, ``image_id``. Crowd
annotations and degenerate boxes are left out of the training targets (COCOeval still
treats crowd regions as ignore, reading them from the annotation file).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from gcnet.fileio import write_json
from gcnet.utils.extras import require

from .datasets import BadImageError, _load_rgb

__all__ = [
    "CocoDetection",
    "AspectRatioBatchSampler",
    "collate_detection",
    "write_synthetic_coco",
    "build_detection_data",
    "find_coco_split",
    "SYNTHETIC_COCO_CLASSES",
]

SYNTHETIC_COCO_CLASSES = ("square", "disc", "triangle")


def _duplicates(ids: list) -> list:
    seen, dup = set(), []
    for i in ids:
        if i in seen:
            dup.append(i)
        seen.add(i)
    return dup


def read_coco_json(ann_file: str) -> dict[str, Any]:
    """A COCO ``instances`` file, checked: the three lists, the fields each entry needs, no
    duplicate ids, annotations of known images and categories, boxes of 4 numbers with
    non-negative width and height. Every error names the file, the entry and the field."""
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{ann_file} is not a COCO instances file: not valid JSON ({e})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{ann_file} is not a COCO instances file: expected a JSON object at the top level")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{ann_file} is not a COCO instances file: no {key!r} list")
    need = {"images": ("id", "file_name", "width", "height"), "annotations": ("id", "image_id", "category_id",
            "bbox"), "categories": ("id", "name")}  # fmt: skip
    for key, fields in need.items():
        for i, entry in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(entry, Mapping) or f not in entry]
            if missing:
                raise ValueError(f"{ann_file}: {key}[{i}] has no {', '.join(map(repr, missing))}")
        dup = _duplicates([e["id"] for e in data[key]])
        if dup:
            raise ValueError(f"{ann_file}: duplicate {key[:-1]} id(s) {dup[:5]}")
    images, cats = {e["id"] for e in data["images"]}, {e["id"] for e in data["categories"]}
    for i, a in enumerate(data["annotations"]):
        if a["image_id"] not in images:
            raise ValueError(f"{ann_file}: annotations[{i}] (id {a['id']}) refers to image_id "
                             f"{a['image_id']}, which is not in 'images'")  # fmt: skip
        if a["category_id"] not in cats:
            raise ValueError(f"{ann_file}: annotations[{i}] (id {a['id']}) has category_id "
                             f"{a['category_id']}, not one of {sorted(cats)[:10]}")  # fmt: skip
        b = a["bbox"]
        if (
            not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, int | float) for v in b))
            or min(b[2:]) < 0
        ):
            raise ValueError(f"{ann_file}: annotations[{i}] (id {a['id']}) has bbox {b!r}; expected "
                             "[x, y, width, height] with width, height >= 0")  # fmt: skip
    return data


class CocoDetection(Dataset):
    """Images of ``image_dir`` annotated by the COCO ``instances`` json ``ann_file``.

    Args:
        image_dir, ann_file: the image folder and its annotation file.
        train: drop images with no usable (non-crowd) annotation, as mmdetection does, and
            apply random horizontal flips (``hflip`` probability).
        masks: decode instance masks (Mask R-CNN); False for Faster R-CNN.
    """

    def __init__(self, image_dir: str, ann_file: str, train: bool = False, hflip: float = 0.5,
                 masks: bool = True) -> None:  # fmt: skip
        COCO = require("pycocotools.coco", "reading COCO annotations").COCO

        if not os.path.isfile(ann_file):
            raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"COCO image folder not found: {image_dir}")
        import contextlib
        import io

        data = read_coco_json(ann_file)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints while indexing
            try:
                self.coco = COCO()
                self.coco.dataset = data
                self.coco.createIndex()
            except (KeyError, TypeError) as e:
                msg = f"{ann_file} is not a COCO instances file: {type(e).__name__}: {e}"
                raise ValueError(msg) from None
        self.image_dir, self.ann_file, self.train, self.hflip, self.with_masks = (
            image_dir, ann_file, train, hflip, masks)  # fmt: skip
        self.cat_ids = sorted(self.coco.getCatIds())
        if not self.cat_ids:
            raise ValueError(f"{ann_file} defines no categories")
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.label_to_cat = {v: k for k, v in self.cat_to_label.items()}
        self.classes = [self.coco.cats[c]["name"] for c in self.cat_ids]
        ids = sorted(self.coco.getImgIds())
        if train:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) and a["bbox"][2] >= 1 and a["bbox"][3] >= 1
                                         for a in self.coco.imgToAnns.get(i, []))]  # fmt: skip
        if not ids:
            raise ValueError(f"{ann_file} has no {'annotated ' if train else ''}images")
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def aspect_ratios(self) -> list[float]:
        return [self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in self.ids]

    def target(self, image_id: int, h: int, w: int) -> dict[str, torch.Tensor]:
        boxes, labels, masks = [], [], []
        for a in self.coco.imgToAnns.get(image_id, []):
            x, y, bw, bh = a["bbox"]
            if a.get("iscrowd", 0) or bw < 1 or bh < 1:
                continue
            if a["category_id"] not in self.cat_to_label:
                raise ValueError(
                    f"{self.ann_file}: annotation {a.get('id')} has unknown category {a['category_id']}"
                )
            boxes.append([x, y, min(x + bw, w), min(y + bh, h)])
            labels.append(self.cat_to_label[a["category_id"]])
            if self.with_masks:
                masks.append(self.coco.annToMask(a))
        t = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": torch.tensor(image_id),
        }
        if self.with_masks:
            empty = torch.zeros(0, h, w, dtype=torch.uint8)
            t["masks"] = torch.from_numpy(np.stack(masks)) if masks else empty
        return t

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = os.path.join(self.image_dir, info["file_name"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path} (id {image_id}) listed in {self.ann_file} is missing")
        img = np.asarray(_load_rgb(path))
        h, w = img.shape[:2]
        if (h, w) != (info["height"], info["width"]):
            said = f"{info['width']}x{info['height']}"
            raise BadImageError(f"{path} is {w}x{h} but {self.ann_file} says {said}")
        x = torch.from_numpy(img.copy()).permute(2, 0, 1).float().div_(255)
        t = self.target(image_id, h, w)
        if self.train and self.hflip > 0 and float(torch.rand(())) < self.hflip:
            x = x.flip(-1)
            b = t["boxes"].clone()
            t["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
            if "masks" in t:
                t["masks"] = t["masks"].flip(-1)
        return x, t


def collate_detection(batch):
    """(list of images, list of targets, 0 skipped): the engine's batch layout."""
    images, targets = zip(*batch)
    return list(images), list(targets), 0


class AspectRatioBatchSampler(Sampler[list[int]]):
    """Batches whose images are all landscape or all portrait (mmdetection's grouping), so
    padding to a common size wastes little. Shuffled per epoch from ``seed + epoch``; with
    several DDP ranks each takes a disjoint, equal share of the batches."""

    def __init__(self, aspect_ratios: Sequence[float], batch_size: int, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:  # fmt: skip
        self.groups = [[i for i, r in enumerate(aspect_ratios) if (r >= 1) == g] for g in (True, False)]
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = []
        for group in self.groups:
            idx = [group[i] for i in torch.randperm(len(group), generator=g)] if self.shuffle else list(group)
            batches += [idx[i : i + self.batch_size] for i in range(0, len(idx) - self.batch_size + 1,
                                                                    self.batch_size)]  # fmt: skip
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g)]
        n = len(batches) // self.num_replicas * self.num_replicas
        return batches[self.rank : n : self.num_replicas]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        full = sum(len(g) // self.batch_size for g in self.groups)
        return full // self.num_replicas


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[float]:
    if shape == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif shape == "triangle":
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:
        angles = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    return [float(v) for p in pts for v in p]


def write_synthetic_coco(root: str, num_images: int = 32, size: tuple[int, int] = (96, 128),
                         split: str = "train", seed: int = 0) -> tuple[str, str]:  # fmt: skip
    """Write ``num_images`` images of coloured squares / discs / triangles on noise and their
    COCO ``instances_<split>.json`` (polygon masks, boxes from the polygons, areas from the
    masks) under ``root``; returns (image folder, annotation file). Sizes alternate between
    landscape and portrait so the aspect-ratio grouping has work to do."""
    mask_utils = require("pycocotools.mask", "the synthetic COCO set")

    img_dir = os.path.join(root, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    rng = np.random.default_rng([seed, {"train": 0, "val": 1}.get(split, 2)])
    colors = np.array([[220, 60, 60], [60, 180, 70], [70, 100, 230]])
    images, anns = [], []
    for i in range(num_images):
        h, w = size if i % 2 == 0 else size[::-1]
        img = rng.normal(110, 20, size=(h, w, 3))
        file_name = f"{i:06d}.png"
        for _ in range(int(rng.integers(1, 4))):
            c = int(rng.integers(len(SYNTHETIC_COCO_CLASSES)))
            r = float(rng.uniform(min(h, w) / 10, min(h, w) / 5))
            cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
            poly = _polygon(SYNTHETIC_COCO_CLASSES[c], cx, cy, r)
            rle = mask_utils.frPyObjects([poly], h, w)
            m = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
            if m.sum() < 4:
                continue
            img[m] = colors[c] + rng.normal(0, 10, size=(int(m.sum()), 3))
            xs, ys = poly[0::2], poly[1::2]
            x0, y0 = max(0.0, min(xs)), max(0.0, min(ys))
            box = [x0, y0, min(float(w), max(xs)) - x0, min(float(h), max(ys)) - y0]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "segmentation": [poly],
                         "area": float(m.sum()), "bbox": box, "iscrowd": 0})  # fmt: skip
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(os.path.join(img_dir, file_name))
        images.append({"id": i + 1, "file_name": file_name, "height": h, "width": w})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                           for i, n in enumerate(SYNTHETIC_COCO_CLASSES)]}  # fmt: skip
    ann_file = write_json(os.path.join(root, "annotations", f"instances_{split}.json"), data)
    return img_dir, ann_file


def build_detection_data(cfg: Mapping[str, Any], split: str) -> tuple[CocoDetection, list[str]]:
    """(dataset, class names): ``data.dataset=coco`` reads ``data.train_ann`` /
    ``data.val_ann`` and ``data.train_images`` / ``data.val_images`` when given, else finds
    them under ``data.root`` (``annotations/instances_<split>.json`` and ``<split>/`` or
    ``images/<split>/``, ... : `find_coco_split`; ``data.train_split`` / ``val_split``
    name the splits); ``synthetic`` writes the embedded set under ``output.dir/synthetic_coco``
    once and reads it back."""
    d = cfg["data"]
    train = split == "train"
    masks = cfg["model"]["name"].startswith("maskrcnn")
    hflip = 0.5 if d["augment"]["hflip"] else 0.0
    if d["dataset"] == "synthetic":
        root = d["root"] or os.path.join(cfg["output"]["dir"], "synthetic_coco")
        n = d["train_size"] if train else d["val_size"]
        sub = "train" if train else "val"
        ann = os.path.join(root, "annotations", f"instances_{sub}.json")
        size = (int(d["image_size"]), int(d["image_size"] * 4 // 3))
        import torch.distributed as dist

        dist_on = dist.is_available() and dist.is_initialized()
        if not dist_on or dist.get_rank() == 0:
            stale = not os.path.isfile(ann)
            if not stale:
                with open(ann) as f:
                    stale = len(json.load(f)["images"]) != n
            if stale:
                write_synthetic_coco(root, n, size, sub, seed=int(d["seed"]))
        if dist_on:
            dist.barrier()
        ds = CocoDetection(os.path.join(root, sub), ann, train=train, hflip=hflip, masks=masks)
        return ds, ds.classes
    if d["dataset"] != "coco":
        raise ValueError(
            f"data.dataset={d['dataset']!r} is not a detection dataset; expected coco or synthetic"
        )
    sub = d["train_split"] if train else d["val_split"]
    key = "train" if train else "val"
    image_dir, ann = find_coco_split(d["root"], sub, d.get(f"{key}_ann"), d.get(f"{key}_images"), key)
    ds = CocoDetection(image_dir, ann, train=train, hflip=hflip, masks=masks)
    return ds, ds.classes


#: annotation files looked for under the root, ``{s}`` the split (COCO's, mmdetection's,
#: Roboflow's and other exports' names)
ANN_CANDIDATES = (
    "annotations/instances_{s}.json",
    "annotations/{s}.json",
    "annotations/instances_{s}2017.json",
    "{s}/_annotations.coco.json",
    "{s}/annotations.json",
    "{s}/instances.json",
    "instances_{s}.json",
    "{s}.json",
)
#: image folders looked for under the root (the first holding the json's first image wins)
IMAGE_CANDIDATES = ("{s}", "images/{s}", "{s}2017", "{s}/images", "images", ".")


def _under(root: str | None, path: str) -> str:
    return path if os.path.isabs(path) or not root else os.path.join(root, path)


def _first_file_name(ann_file: str) -> str | None:
    try:
        with open(ann_file) as f:
            images = json.load(f).get("images") or []
        return images[0]["file_name"] if isinstance(images[0], Mapping) else None
    except (OSError, ValueError, AttributeError, IndexError, KeyError):
        return None  # CocoDetection names the problem


def find_coco_split(root: str | None, split: str, ann: str | None = None, images: str | None = None,
                    key: str = "train") -> tuple[str, str]:  # fmt: skip
    """(image folder, annotation file) of a COCO-format split: ``ann`` / ``images`` (relative
    to ``root`` or absolute) when given, else the first of `ANN_CANDIDATES` that exists
    and the first of `IMAGE_CANDIDATES` that holds the json's first image. A split with
    nothing found is an error that lists every path looked for (``key``: the config keys'
    prefix, ``train`` / ``val``)."""
    if ann:
        ann_file = _under(root, ann)
        if not os.path.isfile(ann_file):
            raise FileNotFoundError(f"COCO annotation file not found: {ann_file} (data.{key}_ann)")
    else:
        if not root:
            raise ValueError(f"give data.root or data.{key}_ann (and data.{key}_images)")
        tried = [os.path.join(root, c.format(s=split)) for c in ANN_CANDIDATES]
        ann_file = next((p for p in tried if os.path.isfile(p)), "")
        if not ann_file:
            raise FileNotFoundError(f"no COCO annotation file for split {split!r}: looked for "
                                    f"{', '.join(tried)}; set data.{key}_ann (and "
                                    f"data.{key}_images)")  # fmt: skip
    if images:
        image_dir = _under(root, images)
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"COCO image folder not found: {image_dir} (data.{key}_images)")
        return image_dir, ann_file
    bases = [root] if root else []
    bases.append(os.path.dirname(ann_file))  # an annotation file beside its images
    dirs = []
    for base in bases:
        for c in IMAGE_CANDIDATES:
            path = os.path.normpath(os.path.join(base, c.format(s=split)))
            if path not in dirs and os.path.isdir(path):
                dirs.append(path)
    first = _first_file_name(ann_file)
    found = next((p for p in dirs if first and os.path.isfile(os.path.join(p, first))), None)
    if found:
        return found, ann_file
    tried = [os.path.normpath(os.path.join(b, c.format(s=split))) for b in bases for c in IMAGE_CANDIDATES]
    tried = list(dict.fromkeys(tried))
    if first is None and dirs:  # no image to look for: CocoDetection names the json's problem
        return dirs[0], ann_file
    raise FileNotFoundError(f"the images of {ann_file} (first: {first}) are in none of {', '.join(tried)}; "
                            f"set data.{key}_images")  # fmt: skip
