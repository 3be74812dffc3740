"""Your own COCO-format detection data (issue 23): the usual layouts are found without
naming the annotation files, explicit ``data.train_ann`` / ``val_ann`` / ``train_images`` /
``val_images`` paths (relative to ``data.root`` or absolute) are read, and a split with
nothing found is an error listing every path looked for. Tiny real files: PNG images and
COCO ``instances`` json."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from gcnet.config import ConfigError, load_config
from gcnet.data.coco import build_detection_data, find_coco_split
from gcnet.fileio import write_json


def _coco(ann_file, image_dir, names=("a.png", "b.png"), classes=("cat", "dog"), prefix=""):
    """Images of 20x24 under ``image_dir`` and their json at ``ann_file`` (file names prefixed
    by ``prefix``, as some exports write them)."""
    os.makedirs(image_dir, exist_ok=True)
    images, anns = [], []
    for i, name in enumerate(names):
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(os.path.join(image_dir, name))
        images.append({"id": i + 1, "file_name": prefix + name, "width": 24, "height": 20})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1 + i % len(classes),
                     "bbox": [2, 3, 10, 8], "area": 80.0, "iscrowd": 0,
                     "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]})  # fmt: skip
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(classes)]
    os.makedirs(os.path.dirname(ann_file), exist_ok=True)
    write_json(ann_file, {"images": images, "annotations": anns, "categories": cats})
    return ann_file


def _cfg(root, *extra):
    base = ["task=detection", "model.name=maskrcnn_r18_fpn", "data.dataset=coco", "data.augment.hflip=false"]
    return load_config(None, [*base, *([f"data.root={root}"] if root else []), *extra])


def _check(cfg, split="train", n=2, classes=("cat", "dog")):
    ds, names = build_detection_data(cfg, split)
    assert names == list(classes) and len(ds) == n
    x, t = ds[0]
    assert x.shape == (3, 20, 24) and t["masks"].shape[0] == 1
    assert t["boxes"].tolist() == [[2.0, 3.0, 12.0, 11.0]]
    return ds


@pytest.mark.parametrize(
    "ann, images",
    [
        ("annotations/instances_{s}.json", "{s}"),  # COCO's own
        ("annotations/instances_{s}.json", "images/{s}"),
        ("annotations/{s}.json", "images/{s}"),
        ("annotations/instances_{s}2017.json", "{s}2017"),  # data.train_split=train on a COCO 2017 tree
        ("{s}/_annotations.coco.json", "{s}"),  # Roboflow's export: the json beside its images
    ],
)
def test_usual_layouts_are_found(tmp_path, ann, images):
    for s in ("train", "val"):
        _coco(str(tmp_path / ann.format(s=s)), str(tmp_path / images.format(s=s)))
    cfg = _cfg(tmp_path)
    _check(cfg, "train")
    ds = _check(cfg, "val")
    assert ds.image_dir == str(tmp_path / images.format(s="val"))


def test_file_names_with_folders_and_explicit_paths(tmp_path):
    # file_name "train/a.png": the images' folder is the root itself
    _coco(str(tmp_path / "annotations" / "instances_train.json"), str(tmp_path / "train"), prefix="train/")
    ann = str(tmp_path / "annotations" / "instances_train.json")
    assert find_coco_split(str(tmp_path), "train") == (str(tmp_path), ann)
    # names of your own, relative to data.root, and absolute ones without a root
    root = tmp_path / "mine"
    _coco(str(root / "labels" / "fit.json"), str(root / "pics" / "fit"), classes=("cat", "dog", "bird"))
    elsewhere = tmp_path / "elsewhere"
    other = _coco(str(elsewhere / "check.json"), str(elsewhere / "jpgs"), ("c.png",), ("cat", "dog", "bird"))
    extra = ["data.train_ann=labels/fit.json", "data.train_images=pics/fit", f"data.val_ann={other}",
             f"data.val_images={tmp_path / 'elsewhere' / 'jpgs'}"]  # fmt: skip
    cfg = _cfg(root, *extra)
    _check(cfg, "train", classes=("cat", "dog", "bird"))
    _check(cfg, "val", n=1, classes=("cat", "dog", "bird"))
    # absolute paths need no root; a json beside its images needs no images key
    cfg = _cfg(None, f"data.train_ann={root / 'labels' / 'fit.json'}",
               f"data.train_images={root / 'pics' / 'fit'}", f"data.val_ann={other}")  # fmt: skip
    _check(cfg, "train", classes=("cat", "dog", "bird"))
    shutil.move(str(tmp_path / "elsewhere" / "jpgs" / "c.png"), str(tmp_path / "elsewhere" / "c.png"))
    _check(cfg, "val", n=1, classes=("cat", "dog", "bird"))


def test_missing_files_list_the_paths_looked_for(tmp_path):
    os.makedirs(tmp_path / "train")
    with pytest.raises(FileNotFoundError) as e:
        build_detection_data(_cfg(tmp_path), "train")
    msg = str(e.value)
    assert "no COCO annotation file for split 'train': looked for" in msg and "set data.train_ann" in msg
    for rel in ("annotations/instances_train.json", "annotations/train.json", "train/_annotations.coco.json"):
        assert str(tmp_path / rel) in msg
    # a json whose images are nowhere: the folders looked in
    _coco(str(tmp_path / "annotations" / "instances_train.json"), str(tmp_path / "pictures"))
    looked = r"the images of .*instances_train\.json \(first: a\.png\) are in none of .*/train, .*/images/"
    with pytest.raises(FileNotFoundError, match=looked + r".*; set data\.train_images"):
        build_detection_data(_cfg(tmp_path), "train")
    with pytest.raises(FileNotFoundError, match=r"annotation file not found: .*nope\.json \(data\.val_ann\)"):
        build_detection_data(_cfg(tmp_path, "data.val_ann=nope.json"), "val")
    with pytest.raises(FileNotFoundError, match=r"image folder not found: .*nothing \(data\.train_images\)"):
        build_detection_data(_cfg(tmp_path, "data.train_images=nothing"), "train")


def test_config_checks():
    with pytest.raises(ConfigError, match="data.train_ann must be a string or null, got 3"):
        _cfg("x", "data.train_ann=3")
    with pytest.raises(ConfigError, match="data.train_ann must be a path"):
        _cfg("x", "data.train_ann=''")
    with pytest.raises(ConfigError, match="data.root is required for data.dataset=coco"):
        _cfg(None, "data.train_ann=a.json")
    _cfg(None, "data.train_ann=/a.json", "data.val_ann=/b.json")  # no root needed
