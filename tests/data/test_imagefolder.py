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


def test_corrupt_image_named_or_skipped(tmp_path):
    root = make_tree(tmp_path, corrupt=True)
    ds, _ = build_classification_data(_cfg(root), "train")
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.jpg")][0]
    with pytest.raises(BadImageError, match="broken.jpg"):
        ds[bad]
    ds, _ = build_classification_data(_cfg(root, **{"data.skip_bad_images": "true"}), "train")
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate_skip_bad))
    assert sum(b[2] for b in batches) == 1
    assert sum(b[0].shape[0] for b in batches) == 6


def test_cli_names_the_corrupt_file_from_a_worker(tmp_path, capsys):
    from gcnet.cli import main

    root = make_tree(tmp_path / "d", corrupt=True)
    args = ["train", "--data", str(root), "--no-progress", "-o", str(tmp_path / "o"),
            "--set", "model.name=resnet18", "--set", "data.image_size=32", "--set", "train.batch_size=7",
            "--set", "train.epochs=1", "--set", "data.num_workers=1"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Traceback" not in err
    assert main([*args, "--skip-bad-images"]) == 0
    assert "skipped 1 unreadable image" in capsys.readouterr().out
