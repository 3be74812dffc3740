"""Your own segmentation data (``data.dataset: custom``, issue 23): tiny trees of real JPEG
images and label PNGs in the layouts users have, read with the user's class names, colours
and ignore value; a VOC-layout tree with 3 classes trains a 3-class head, and predict / eval
on that run speak of the user's classes in the user's colours."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gcnet.config import ConfigError, load_config
from gcnet.data.datasets import BadImageError
from gcnet.data.segmentation import (
    CustomSegmentation,
    SegmentationFiles,
    build_segmentation_data,
    color_palette,
    read_classes_file,
    seg_classes_from_config,
)

CLASSES = ["background", "cat", "dog"]
PALETTE = [[0, 0, 0], [250, 20, 20], [20, 20, 250]]


def _labels(h=32, w=32, k=3, seed=0):
    """Blocks of labels 0..k-1 (every class present) and a top row of 255."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    m[:, w // 3 :] = 1
    m[h // 2 :, 2 * w // 3 :] = k - 1
    m[rng.integers(0, h), :] = rng.integers(0, k)
    m[0] = 255
    return m


def _image(path, mask, palette=PALETTE):
    """An image whose colours follow the mask (plus noise), so a few steps learn something."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pal = np.asarray(palette + [[128, 128, 128]] * (256 - len(palette)), np.float64)
    arr = pal[mask] * 0.6 + np.random.default_rng(len(path)).normal(60, 20, (*mask.shape, 3))
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path)


def _mask(path, arr, mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="L")
    if mode == "P":
        im = Image.fromarray(arr.astype(np.uint8), mode="P")
        im.putpalette(color_palette(256).flatten().tolist())
    im.save(path)


def _folder_tree(root, counts=(("train", 3), ("val", 2)), masks="masks", suffix=".png", ignore=255):
    for split, n in counts:
        for i in range(n):
            m = _labels(seed=i)
            _image(str(root / "images" / split / f"im{i}.jpg"), m)
            _mask(str(root / masks / split / f"im{i}{suffix}"), np.where(m == 255, ignore, m))
    return root


def _voc_tree(root, n_train=4, n_val=2):
    """JPEGImages, SegmentationClass (palette PNGs), ImageSets/Segmentation/{train,val}.txt."""
    names = [f"2024_{i:06d}" for i in range(n_train + n_val)]
    for i, name in enumerate(names):
        m = _labels(seed=i)
        _image(str(root / "JPEGImages" / f"{name}.jpg"), m)
        _mask(str(root / "SegmentationClass" / f"{name}.png"), m, mode="P")
    lists = root / "ImageSets" / "Segmentation"
    os.makedirs(lists)
    (lists / "train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (lists / "val.txt").write_text("\n".join(names[n_train:]) + "\n")
    return root


def _cfg(root, *extra):
    return load_config(None, ["task=segmentation", "data.dataset=custom", f"data.root={root}", *extra])


def test_folders_load_with_the_users_classes_and_ignore_value(tmp_path):
    root = _folder_tree(tmp_path / "data", ignore=200)
    cfg = _cfg(root, f"data.seg.classes={CLASSES}", "data.seg.ignore_index=200", "data.seg.ratio_range=null",
               "data.seg.photometric=false")  # fmt: skip
    train, classes = build_segmentation_data(cfg, "train")
    val, _ = build_segmentation_data(cfg, "val")
    assert classes == CLASSES and (len(train), len(val)) == (3, 2)
    assert train.pairs[0][1].endswith(os.path.join("masks", "train", "im0.png"))
    img, mask = train.load(0)
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
    # the files' ignore value (200) is 255 inside, every other label as stored
    torch.testing.assert_close(mask, torch.from_numpy(_labels(seed=0)))
    x, y = val[1]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and set(y.unique().tolist()) <= {0, 1, 2, 255}
    np.testing.assert_array_equal(train.palette, color_palette(3))  # no colours given: VOC's map


def test_classes_file_annotations_folder_and_suffixes(tmp_path):
    root = _folder_tree(tmp_path / "data", masks="annotations", suffix="_mask.png")
    (root / "classes.txt").write_text("# name R G B\nbackground 0 0 0\ncat 250 20 20\nhot dog 20, 20, 250\n")
    names, pal = read_classes_file(str(root / "classes.txt"))
    assert names == ["background", "cat", "hot dog"] and pal.tolist() == PALETTE
    with pytest.raises(FileNotFoundError, match=r"3 of 3 images .* have no mask: e\.g\. .*im0\.png"):
        build_segmentation_data(_cfg(root), "train")
    ds, classes = build_segmentation_data(_cfg(root, "data.seg.seg_map_suffix=_mask.png"), "train")
    assert classes == names and ds.palette.tolist() == PALETTE
    # data.seg.palette overrides the file's colours; classes as a file relative to the root
    (root / "names.txt").write_text("a\nb\nc\n")
    cfg = _cfg(root, "data.seg.classes=names.txt", "data.seg.palette=[[1,2,3],[4,5,6],[7,8,9]]")
    got = seg_classes_from_config(cfg["data"])
    assert got[0] == ["a", "b", "c"] and got[1].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # predict's colours: classes.txt's while it is there, else VOC's map
    from gcnet.tasks import get_task

    task, cfg = get_task("segmentation"), _cfg(root, "data.seg.seg_map_suffix=_mask.png")
    assert task.reporting._palette(cfg, 3).tolist() == PALETTE
    os.remove(root / "classes.txt")
    assert task.reporting._palette(cfg, 3).tolist() == color_palette(3).tolist()


def test_split_lists_explicit_folders_and_ade_names(tmp_path):
    # flat folders + a split list of stems at the root
    root = tmp_path / "flat"
    for i in range(3):
        m = _labels(seed=i)
        _image(str(root / "images" / f"s{i}.png"), m)
        _mask(str(root / "masks" / f"s{i}.png"), m)
    (root / "train.txt").write_text("s0\ns2\n")
    ds = CustomSegmentation(str(root), "train", CLASSES)
    assert [os.path.basename(p) for p, _ in ds.pairs] == ["s0.png", "s2.png"]
    # an explicit list of (image, mask) paths, and explicit folders with {split}
    (root / "lists").mkdir()
    (root / "lists" / "val.txt").write_text("images/s1.png masks/s1.png\n")
    ds = CustomSegmentation(str(root), "val", CLASSES, split_list="lists/{split}.txt")
    assert ds.pairs == [(str(root / "images" / "s1.png"), str(root / "masks" / "s1.png"))]
    tree = _folder_tree(tmp_path / "mine", masks="gt")
    ds = CustomSegmentation(str(tree), "val", CLASSES, img_dir="images/{split}", ann_dir="gt/{split}",
                            img_suffix=".jpg")  # fmt: skip
    assert len(ds) == 2
    # ADE20K's folder names for train / val, label 0 ignored with reduce_zero_label
    ade = tmp_path / "ade"
    m = np.array([[0, 1, 2, 3]] * 4)
    _image(str(ade / "images" / "training" / "a.jpg"), m)
    _mask(str(ade / "annotations" / "training" / "a.png"), m)
    ds = CustomSegmentation(str(ade), "train", CLASSES, reduce_zero_label=True)
    assert ds.load(0)[1][0].tolist() == [255, 0, 1, 2]
    with pytest.raises(FileNotFoundError, match=r"no images \+ masks for split 'val' under .*images/val \+ "):
        CustomSegmentation(str(ade), "val", CLASSES)


def test_a_voc_tree_with_your_classes(tmp_path):
    root = _voc_tree(tmp_path / "VOCdevkit" / "VOC2012", 2, 1)
    # the voc format with 3 names, and the custom format finding the VOC layout
    for extra in (["data.dataset=voc"], []):
        cfg = _cfg(tmp_path / "VOCdevkit", f"data.seg.classes={CLASSES}", *extra)
        ds, classes = build_segmentation_data(cfg, "train")
        assert classes == CLASSES and len(ds) == 2 and len(ds.palette) == 3
    _mask(str(root / "SegmentationClass" / "2024_000001.png"), np.full((32, 32), 7), mode="P")
    with pytest.raises(BadImageError, match=r"mask .*2024_000001\.png has label\(s\) \[7\] outside 0\.\.2 "):
        build_segmentation_data(cfg, "train")  # up front, before any training


def test_bad_mask_value_is_one_named_error_before_training(tmp_path, capsys):
    from gcnet.cli import main

    root = _folder_tree(tmp_path / "data")
    bad = _labels(seed=1)
    bad[5, 5] = 9
    _mask(str(root / "masks" / "train" / "im2.png"), bad)
    rc = main(["train", "-c", "demo_segmentation", "--data", str(root), "-o", str(tmp_path / "run"),
               "--set", f"data.seg.classes={CLASSES}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "im2.png has label(s) [9] outside 0..2 (3 classes: background, cat, dog; 255 = ignore" in err[0]
    assert not os.path.exists(tmp_path / "run" / "last.pth")
    # no class names at all: the error says where they go
    assert main(["train", "-c", "demo_segmentation", "--data", str(root), "-o", str(tmp_path / "run")]) == 2
    assert "data.seg.classes" in capsys.readouterr().err


def test_images_of_different_sizes_need_a_crop_to_be_batched(tmp_path):
    root = _folder_tree(tmp_path / "data")
    m = _labels(24, 40)
    _image(str(root / "images" / "train" / "im1.jpg"), m)
    _mask(str(root / "masks" / "train" / "im1.png"), m)
    sizes = r"the train images \(masks\) have different sizes \(.*im0\.png: 32x32, .*im1\.png: 40x24\): "
    with pytest.raises(ValueError, match=sizes + r"batches of train\.batch_size=64 need data\.seg\.crop_"):
        build_segmentation_data(_cfg(root, f"data.seg.classes={CLASSES}"), "train")
    cfg = _cfg(root, f"data.seg.classes={CLASSES}", "data.seg.crop_size=[16, 16]")
    ds, _ = build_segmentation_data(cfg, "train")
    assert ds[1][0].shape == (3, 16, 16)


def test_config_errors_name_the_key():
    base = ["task=segmentation", "data.dataset=custom", "data.root=."]
    cases = {
        "data.seg.classes=cat": None,  # a file name: fine for the config
        "data.seg.classes=[]": "data.seg.classes must be a list",
        "data.seg.classes=[a, a]": "names a class twice",
        "data.seg.palette=[[0, 0]]": "data.seg.palette must be a list of \\[R, G, B\\]",
        "data.seg.palette=[[0, 0, 300]]": "data.seg.palette must be",
        "data.seg.ignore_index=256": "data.seg.ignore_index must be an integer in \\[0, 255\\]",
        "data.seg.ignore_index=x": "data.seg.ignore_index must be an integer",
        "data.seg.img_dir=images": "data.seg.img_dir and data.seg.ann_dir go together",
        "data.seg.seg_map_suffix=''": "data.seg.seg_map_suffix must be a non-empty string",
    }
    for item, match in cases.items():
        if match is None:
            load_config(None, [*base, item])
            continue
        with pytest.raises(ConfigError, match=match):
            load_config(None, [*base, item])
    with pytest.raises(ConfigError, match="2 colours for the 3 classes"):
        load_config(None, [*base, f"data.seg.classes={CLASSES}", "data.seg.palette=[[0,0,0],[1,1,1]]"])
    with pytest.raises(ValueError, match="ignore_index=1 is also the label of class 'cat'"):
        SegmentationFiles([("a", "b")], CLASSES, ignore_index=1)


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    """``gcnet train -c demo_segmentation --data VOC_TREE`` with 3 class names and colours: a
    few steps on 32x32 images, in this process."""
    from tests.helpers import run_gcnet_here

    tmp = tmp_path_factory.mktemp("vocrun")
    root = _voc_tree(tmp / "VOC2012")
    out = tmp / "run"
    run_gcnet_here(["train", "-c", "demo_segmentation", "--data", root, "-o", out, "--no-progress",
                    "--set", f"data.seg.classes={CLASSES}", "--set", f"data.seg.palette={PALETTE}",
                    "--set", "data.image_size=32", "--set", "data.num_workers=0",
                    "--set", "train.batch_size=2", "--set", "train.epochs=2",
                    "--set", "model.kwargs={channels: 16, aux_channels: 8}",
                    "--set", "output.plot=false", "--set", "optim.lr=0.005"])  # fmt: skip
    return root, out


def test_voc_tree_trains_a_head_of_the_users_classes(voc_run):
    from gcnet.engine.checkpoint import load_checkpoint

    _, out = voc_run
    ck = load_checkpoint(str(out / "last.pth"))
    assert ck["classes"] == CLASSES and ck["config"]["data"]["dataset"] == "custom"
    heads = [v for k, v in ck["model"].items() if k.endswith("weight") and v.dim() == 4 and v.shape[-1] == 1]
    assert heads and {int(w.shape[0]) for w in heads[-2:]} == {3}  # classifier (and aux): 3 outputs
    assert ck["config"]["data"]["seg"]["crop_size"] == [32, 32]  # --data on the demo recipe: crops


def test_predict_and_eval_use_the_users_names_and_colours(voc_run, tmp_path, capsys):
    from gcnet.cli import main

    root, out = voc_run
    img = root / "JPEGImages" / "2024_000004.jpg"
    assert main(["predict", str(img), "--checkpoint", str(out / "last.pth"), "-o", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert any(f"{name} " in text for name in CLASSES) and "bicycle" not in text and "aeroplane" not in text
    colors = np.asarray(Image.open(tmp_path / "p" / "2024_000004_mask.png")).reshape(-1, 3)
    assert {tuple(c) for c in np.unique(colors, axis=0).tolist()} <= {tuple(c) for c in PALETTE}
    labels = np.asarray(Image.open(tmp_path / "p" / "2024_000004_labels.png"))
    overlay = np.asarray(Image.open(tmp_path / "p" / "2024_000004_overlay.png")).astype(int)
    rgb = np.asarray(Image.open(img)).astype(int)
    want = (0.5 * rgb + 0.5 * np.asarray(PALETTE)[labels]).astype(int)
    assert np.abs(overlay - want).max() <= 1
    assert main(["eval", "--checkpoint", str(out / "last.pth"), "-o", str(tmp_path / "ev")]) == 0
    text = capsys.readouterr().out
    assert all(f"  {name} " in text for name in CLASSES)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["classes"] == CLASSES and len(m["per_class_iou"]) == 3 and len(m["confusion_matrix"]) == 3
