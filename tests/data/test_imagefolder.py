import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gcnet.config import load_config
from gcnet.data import BadImageError, build_classification_data, collate_skip_bad


def make_tree(root, classes=("cat", "dog"), n=3, size=40, corrupt=None):
    for split in ("train", "val"):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                img = Image.new("RGB", (size + 7 * i, size), (80 * ci, 120, 40 * i))
                img.save(d / f"{i}.jpg", quality=90)
    if corrupt:
        (root / "train" / classes[0] / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def _cfg(root, **kw):
    sets = [f"data.root={root}", "data.dataset=imagefolder", "data.image_size=32"]
    return load_config(None, sets + [f"{k}={v}" for k, v in kw.items()])


def test_imagefolder_loads_jpegs(tmp_path):
    root = make_tree(tmp_path)
    ds, classes = build_classification_data(_cfg(root), "train")
    assert classes == ["cat", "dog"] and len(ds) == 6
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    val, _ = build_classification_data(_cfg(root), "val")
    assert val[5][1] == 1


def test_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        build_classification_data(_cfg(tmp_path / "nope"), "train")
    root = make_tree(tmp_path / "t")
    (root / "train" / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images in .*\['empty_class'\]"):
        build_classification_data(_cfg(root), "train")


def test_corrupt_image_found_before_training(tmp_path):
    """data.verify_images (default quick): the tree is checked when the dataset is built; a
    bad file stops it there, or (skip_bad_images) leaves the samples and is listed."""
    root = make_tree(tmp_path, corrupt=True)
    with pytest.raises(BadImageError, match=r"1 unreadable image\(s\) in .*broken.jpg: not an image"):
        build_classification_data(_cfg(root), "train")
    ds, _ = build_classification_data(_cfg(root, **{"data.skip_bad_images": "true"}), "train")
    assert len(ds) == 6 and [p.endswith("broken.jpg") for p, _ in ds.bad_files] == [True]
    assert not any(p.endswith("broken.jpg") for p, _ in ds.samples) and ds.targets == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_verify_modes_find_a_cut_jpeg(tmp_path, mode):
    from gcnet.data.datasets import check_image

    root = make_tree(tmp_path, size=96)
    whole = (root / "train" / "cat" / "0.jpg").read_bytes()
    cut = root / "cut.jpg"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    assert check_image(str(root / "train" / "cat" / "0.jpg"), mode) is None
    assert "cut.jpg" in check_image(str(cut), mode)


def test_corrupt_image_named_or_skipped(tmp_path):
    """data.verify_images=off: a bad file is found when a batch loads it."""
    root = make_tree(tmp_path, corrupt=True)
    ds, _ = build_classification_data(_cfg(root, **{"data.verify_images": "off"}), "train")
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.jpg")][0]
    with pytest.raises(BadImageError, match="broken.jpg"):
        ds[bad]
    cfg = _cfg(root, **{"data.skip_bad_images": "true", "data.verify_images": "off"})
    ds, _ = build_classification_data(cfg, "train")
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate_skip_bad))
    assert sum(b[2] for b in batches) == 1
    assert sum(b[0].shape[0] for b in batches) == 6


def test_cli_names_the_corrupt_file_from_a_worker(tmp_path, capsys):
    from gcnet.cli import main

    root = make_tree(tmp_path / "d", corrupt=True)
    args = ["train", "--data", str(root), "--no-progress", "-o", str(tmp_path / "o"),
            "--set", "model.name=resnet18", "--set", "data.image_size=32", "--set", "train.batch_size=7",
            "--set", "train.epochs=1", "--set", "data.num_workers=1",
            "--set", "data.verify_images=off"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Traceback" not in err
    assert main([*args, "--skip-bad-images"]) == 0
    assert "skipped 1 unreadable image" in capsys.readouterr().out
