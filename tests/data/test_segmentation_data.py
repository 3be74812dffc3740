"""Segmentation data: tiny trees in the Cityscapes, VOC (+aug) and ADE20K layouts read
through the real readers; joint transforms keep image and mask aligned; the synthetic set."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from gcnet.config import load_config
from gcnet.data.datasets import BadImageError
from gcnet.data.seg_transforms import (
    Normalize,
    Pad,
    RandomCrop,
    RandomFlip,
    RandomRescale,
    SegCompose,
    keep_ratio_size,
)
from gcnet.data.segmentation import (
    ADE20K,
    Cityscapes,
    SyntheticSegmentation,
    VOCSegmentation,
    build_segmentation_data,
    color_palette,
)


def _img(path, h=12, w=16, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _mask(path, arr, mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="L")
    if mode == "P":
        im = im.convert("P")
        im.putpalette(color_palette(256).flatten().tolist())
        im = Image.fromarray(arr.astype(np.uint8), mode="P")
        im.putpalette(color_palette(256).flatten().tolist())
    im.save(path)


def _labels(h=12, w=16, k=19):
    arr = np.arange(h * w).reshape(h, w) % k
    arr[0, :] = 255
    return arr


def test_cityscapes_layout(tmp_path):
    root = tmp_path / "cityscapes"
    for split, city, n in (("train", "aachen", 2), ("val", "frankfurt", 1)):
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            _img(str(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"), seed=i)
            _mask(str(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"), _labels())
    ds = Cityscapes(str(root), "train")
    assert len(ds) == 2 and len(ds.classes) == 19
    img, mask = ds.load(0)
    assert img.shape == (3, 12, 16) and img.dtype == torch.uint8
    torch.testing.assert_close(mask, torch.from_numpy(_labels().astype(np.uint8)))
    cfg = load_config(overrides=["task=segmentation", "data.dataset=cityscapes", f"data.root={root}"])
    val, classes = build_segmentation_data(cfg, "val")
    x, y = val[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and classes[0] == "road"
    os.remove(root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelTrainIds.png")
    with pytest.raises(FileNotFoundError, match="createTrainIdLabelImgs"):
        Cityscapes(str(root), "val")


def test_voc_layout_with_aug_split(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    seg = root / "ImageSets" / "Segmentation"
    os.makedirs(seg)
    lab = _labels(k=21)
    for i, name in enumerate(["2007_000001", "2007_000002", "2008_000003"]):
        _img(str(root / "JPEGImages" / f"{name}.jpg"), seed=i)
    for name in ("2007_000001", "2007_000002"):
        _mask(str(root / "SegmentationClass" / f"{name}.png"), lab, mode="P")
    _mask(str(root / "SegmentationClassAug" / "2008_000003.png"), lab % 5)
    (seg / "train.txt").write_text("2007_000001\n")
    (seg / "val.txt").write_text("2007_000002\n")
    (seg / "aug.txt").write_text("2007_000001\n2008_000003\n")
    ds = VOCSegmentation(str(tmp_path / "VOCdevkit"), "train")  # the VOCdevkit folder works too
    _, m = ds.load(0)
    # a palette PNG is read as its indices, not its colours; the border stays 255
    torch.testing.assert_close(m, torch.from_numpy(lab.astype(np.uint8)))
    aug = VOCSegmentation(str(root), "train_aug")
    assert len(aug) == 2 and aug.pairs[1][1].endswith("SegmentationClassAug/2008_000003.png")
    with pytest.raises(FileNotFoundError, match="split list"):
        VOCSegmentation(str(root), "trainval")


def test_ade20k_reduces_zero_label(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    arr = np.array([[0, 1, 2, 150]] * 3)
    _img(str(root / "images" / "training" / "ADE_train_00000001.jpg"), 3, 4)
    _mask(str(root / "annotations" / "training" / "ADE_train_00000001.png"), arr)
    ds = ADE20K(str(root), "train")
    _, m = ds.load(0)
    assert m[0].tolist() == [255, 0, 1, 149] and len(ds.classes) == 150


def test_bad_files_are_named(tmp_path):
    root = tmp_path / "cityscapes"
    stem = "x_000000_000000"
    img = root / "leftImg8bit" / "train" / "x" / f"{stem}_leftImg8bit.png"
    mask = root / "gtFine" / "train" / "x" / f"{stem}_gtFine_labelTrainIds.png"
    _img(str(img))
    _mask(str(mask), _labels(8, 8))
    with pytest.raises(BadImageError, match="8x8 but image .* is 16x12"):
        Cityscapes(str(root), "train").load(0)
    _mask(str(mask), np.full((12, 16), 40))
    with pytest.raises(BadImageError, match=r"label\(s\) \[40\] outside 0..18"):
        Cityscapes(str(root), "train").load(0)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(mask)
    with pytest.raises(BadImageError, match="single-channel"):
        Cityscapes(str(root), "train").load(0)
    img.write_bytes(b"not a png")
    with pytest.raises(BadImageError, match="cannot read image .*leftImg8bit.png"):
        Cityscapes(str(root), "train").load(0)
    with pytest.raises(FileNotFoundError, match="Cityscapes images not found"):
        Cityscapes(str(tmp_path / "nowhere"), "train")


def _coded_pair(h=40, w=60):
    """A mask of big blocks and an image whose red channel encodes the mask."""
    mask = torch.zeros(h, w, dtype=torch.uint8)
    mask[:, w // 2 :] = 1
    mask[h // 2 :, : w // 3] = 2
    img = torch.stack([mask * 100, torch.zeros_like(mask), torch.zeros_like(mask)]).to(torch.uint8)
    return img, mask


def test_joint_transforms_keep_image_and_mask_aligned():
    torch.manual_seed(0)
    tf = SegCompose([RandomRescale(None, (0.5, 2.0)), RandomCrop((24, 24), 0.75), RandomFlip(0.5)])
    for _ in range(20):
        img, mask = tf(*_coded_pair())
        assert img.shape[-2:] == mask.shape
        inner = mask[1:-1, 1:-1]  # bilinear image vs nearest mask may differ on block edges
        agree = (img[0, 1:-1, 1:-1].float() / 100).round().to(torch.uint8) == inner
        assert agree.float().mean() > 0.9


def test_rescale_crop_pad_rules():
    assert keep_ratio_size(1024, 2048, (2048, 512)) == (512, 1024)
    assert keep_ratio_size(375, 500, (2048, 512)) == (512, 683)  # short edge hits 512 first
    assert keep_ratio_size(100, 1000, (2048, 512)) == (205, 2048)  # long edge hits 2048 first
    img, mask = _coded_pair(10, 10)
    x, y = Pad((16, 12))(*Normalize([0.5] * 3, [0.5] * 3)(img, mask))
    assert x.shape == (3, 16, 12) and (y[10:] == 255).all() and (y[:, 10:] == 255).all()
    assert (x[:, 10:] == 0).all()
    # the category cap: a crop of one class only is retried
    mask = torch.zeros(100, 100, dtype=torch.uint8)
    mask[:, 50:] = 1
    torch.manual_seed(0)
    crops = [RandomCrop((20, 20), 0.75)(torch.zeros(3, 100, 100), mask)[1] for _ in range(10)]
    assert sum(len(c.unique()) > 1 for c in crops) >= 5


def test_synthetic_segmentation_cue_decides_the_class():
    ds = SyntheticSegmentation(20, 64, "train", seed=3)
    img, mask = ds.render(5)
    again, mask2 = SyntheticSegmentation(20, 64, "train", seed=3).render(5)
    assert (img == again).all() and (mask == mask2).all()
    for i in range(20):
        img, mask = ds.render(i)
        fg = np.unique(mask[mask > 0])
        assert len(fg) == 1  # every object pixel has the same class
        cls = int(fg[0])
        # the cue: pixels whose colour is close to the class's palette colour
        dist = np.abs(img.astype(int) - ds.palette[cls].astype(int)).sum(-1)
        assert (dist < 60).sum() >= 64 and (mask[dist < 60] == 0).all()
        # objects are grey: their colour says nothing about the class
        obj = img[mask > 0].astype(int)
        assert np.abs(obj - obj.mean(-1, keepdims=True)).max() < 2
    classes = {int(np.unique(ds.render(i)[1][ds.render(i)[1] > 0])[0]) for i in range(20)}
    assert classes == {1, 2, 3}
