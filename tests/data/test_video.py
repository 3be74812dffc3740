"""Video datasets (gcnet.data.video): every annotation format parsed to the same records,
each bad-annotation case with its message, missing / undecodable videos skipped and counted,
the 30 test views in clip-major order, per-sample seeding."""

import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gcnet.data import collate_skip_bad
from gcnet.data.seeding import EpochSeeded
from gcnet.data.video import (
    BadVideoError,
    VideoTestDataset,
    VideoTrainDataset,
    build_video_dataset,
    kinetics_classes,
    load_video_views,
    parse_kinetics_csv,
    parse_rawframe_list,
    parse_video_list,
    scan_video_folder,
)
from gcnet.data.video_transforms import eval_clip_indices

from .video_helpers import coded_frames, frame_index, write_coded, write_frame_folder

CLASSES = ["abseiling", "air drumming", "yoga"]  # sorted; one with a blank, as in Kinetics
CLIPS = {  # label -> (youtube_id, start, end)
    "abseiling": [("a1", 0, 10), ("a2", 15, 25)],
    "air drumming": [("b1", 3, 13)],
    "yoga": [("c1", 120, 130), ("c2", 7, 17)],
}


def _clip_rel(label, yid, s, e):
    return f"train/{label}/{yid}_{s:06d}_{e:06d}.mp4"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The same 5 training videos in every layout: ``train/<label>/<id>_<s>_<e>.mp4``,
    listed by ``train.txt`` (+ ``classes.txt``), a SlowFast-style space-separated csv, and the
    Kinetics ``train.csv``."""
    root = tmp_path_factory.mktemp("videos")
    src = write_coded(root / "src.mp4", 40)
    lines, csv_rows, truth = [], ["label,youtube_id,time_start,time_end,split"], []
    for label, clips in CLIPS.items():
        for yid, s, e in clips:
            rel = _clip_rel(label, yid, s, e)
            os.makedirs(os.path.dirname(root / rel), exist_ok=True)
            shutil.copy(src, root / rel)
            lines.append(f"{rel} {CLASSES.index(label)}")
            csv_rows.append(f"{label},{yid},{s},{e},train")
            truth.append((str(root / rel), CLASSES.index(label)))
    os.remove(src)
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "slowfast_train.csv").write_text("# SlowFast: path label, space separated\n" + "\n".join(lines))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "train.csv").write_text("\n".join(csv_rows) + "\n")
    return root, sorted(truth)


def _pairs(records):
    return sorted((os.path.normpath(r.path), r.label) for r in records)


def test_every_format_gives_the_same_records(tree):
    root, truth = tree
    lst, c1 = parse_video_list(str(root / "train.txt"), str(root), classes=CLASSES)
    sf, c2 = parse_video_list(str(root / "slowfast_train.csv"), str(root), num_classes=3)
    folder, c3 = scan_video_folder(str(root / "train"))
    kin, c4 = parse_kinetics_csv(str(root / "train.csv"), str(root / "train"))
    assert _pairs(lst) == _pairs(sf) == _pairs(folder) == _pairs(kin) == truth
    assert c1 == c3 == c4 == CLASSES and c2 == ["0", "1", "2"]
    assert lst[0].origin == f"{root / 'train.txt'}:1" and kin[0].origin == f"{root / 'train.csv'}:2"
    # through the factory: the same records, the classes file's names
    for name in ("video_list", "video_folder", "kinetics"):
        ds = build_video_dataset({"dataset": name, "root": str(root)}, "train", train=True)
        assert isinstance(ds, VideoTrainDataset) and _pairs(ds.records) == truth and ds.classes == CLASSES


def test_kinetics_label_folders_with_underscores_and_flat_layouts(tmp_path):
    src = write_coded(tmp_path / "src.mp4", 20)
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split\nair drumming,x1,1,11,val\n")
    os.makedirs(tmp_path / "under" / "air_drumming")
    shutil.copy(src, tmp_path / "under" / "air_drumming" / "x1_000001_000011.mp4")
    os.makedirs(tmp_path / "flat")
    shutil.copy(src, tmp_path / "flat" / "x1_000001_000011.webm")
    for sub, name in (("under", "air_drumming/x1_000001_000011.mp4"), ("flat", "x1_000001_000011.webm")):
        recs, classes = parse_kinetics_csv(str(tmp_path / "k.csv"), str(tmp_path / sub))
        assert recs[0].path == str(tmp_path / sub / name) and classes == ["air drumming"]


def test_kinetics_val_takes_the_train_classes(tree, tmp_path):
    root, _ = tree
    (tmp_path / "train.csv").write_bytes((root / "train.csv").read_bytes())
    os.symlink(root / "train", tmp_path / "val")  # the val clips (here: the same files)
    rows = "label,youtube_id,time_start,time_end,split\nyoga,c2,7,17,val\nabseiling,a1,0,10,val\n"
    (tmp_path / "validate.csv").write_text(rows)
    ds = build_video_dataset({"dataset": "kinetics", "root": str(tmp_path)}, "val", train=False)
    assert ds.classes == CLASSES == kinetics_classes(str(tmp_path / "train.csv"))
    assert [r.label for r in ds.records] == [2, 0]  # train ids, not the val CSV's own sorted labels
    (tmp_path / "validate.csv").write_text(rows + "zumba,q1,0,10,val\n")
    with pytest.raises(ValueError, match=r"validate.csv:4: label 'zumba' is not one of the 3 classes"):
        build_video_dataset({"dataset": "kinetics", "root": str(tmp_path)}, "val", train=False)
    (tmp_path / "validate.csv").write_text("youtube_id,time_start,time_end\nq1,0,10\n")
    with pytest.raises(ValueError, match=r"validate.csv:1: header .* lacks column\(s\) \['label'\]"):
        build_video_dataset({"dataset": "kinetics", "root": str(tmp_path)}, "val", train=False)


def test_video_folder_val_takes_the_train_classes(tree, tmp_path):
    root, _ = tree
    os.symlink(root / "train", tmp_path / "train")
    os.makedirs(tmp_path / "val" / "yoga")
    shutil.copy(root / _clip_rel("yoga", "c1", 120, 130), tmp_path / "val" / "yoga" / "v.mp4")
    ds = build_video_dataset({"dataset": "video_folder", "root": str(tmp_path)}, "val", train=False)
    assert ds.classes == CLASSES and ds.records[0].label == 2


@pytest.mark.parametrize(
    "line, kw, expect",
    [
        ("justonefield", {}, "expected '<relative/path> <label>', got 'justonefield'"),
        ("a.mp4 x", {}, "label 'x' is not an integer"),
        ("a.mp4 -1", {}, "label -1 is out of range for labels >= 0"),
        ("a.mp4 3", {"num_classes": 3}, "label 3 is out of range for 3 classes (num_classes)"),
        (
            "a.mp4 5",
            {"classes": ["p", "q"], "classes_src": "c.txt"},
            "label 5 is out of range for 2 classes (c.txt)",
        ),
    ],
)
def test_bad_list_lines_name_the_file_and_line(tmp_path, line, kw, expect):
    p = tmp_path / "list.txt"
    p.write_text(f"ok/video.mp4 0\n\n{line}\n")
    with pytest.raises(ValueError) as e:
        parse_video_list(str(p), str(tmp_path), **kw)
    assert str(e.value) == f"{p}:3: {expect}"


def test_label_out_of_range_of_the_classes_file(tree):
    root, _ = tree
    data = {"dataset": "video_list", "root": str(root), "train_list": "bad.txt"}
    (root / "bad.txt").write_text("train/yoga/c1_000120_000130.mp4 3\n")
    with pytest.raises(
        ValueError, match=r"bad.txt:1: label 3 is out of range for 3 classes \(.*classes.txt\)$"
    ):
        build_video_dataset(data, "train", train=True)


def test_rawframe_list_and_folder_short_of_frames(tmp_path):
    write_frame_folder(tmp_path / "f" / "v1", coded_frames(12), "img_{:05d}.png")
    write_frame_folder(tmp_path / "f" / "v2", coded_frames(7), "img_{:05d}.png")
    (tmp_path / "train.txt").write_text("f/v1 12 1\nf/v2 10 0\n")
    recs, classes = parse_rawframe_list(str(tmp_path / "train.txt"), str(tmp_path))
    assert [(r.path, r.total_frames, r.label) for r in recs] == [
        (str(tmp_path / "f/v1"), 12, 1),
        (str(tmp_path / "f/v2"), 10, 0),
    ]
    assert classes == ["0", "1"]
    data = {"dataset": "rawframes", "root": str(tmp_path), "filename_tmpl": "img_{:05d}.png",
            "clip_len": 4, "frame_interval": 2, "train_scale": [32, 32], "crop_size": 32}  # fmt: skip
    short = (f"{tmp_path / 'train.txt'}:2: frame folder {tmp_path / 'f/v2'} has 7 frames "
             f"(img_{{:05d}}.png), fewer than the 10 its list line declares")  # fmt: skip
    with pytest.raises(BadVideoError) as e:  # found up front: one stat of the last declared frame
        build_video_dataset(data, "train", train=True)
    assert str(e.value) == short + "; fix the list or set data.skip_bad_videos=true"
    with pytest.warns(UserWarning, match="skipping 1 of 2"):
        ds = build_video_dataset({**data, "skip_bad_videos": True}, "train", train=True)
    assert len(ds) == 1
    clip, label = ds[0]
    assert clip.shape == (3, 4, 32, 32) and label == 1
    os.remove(tmp_path / "f" / "v1" / "img_00012.png")  # a folder that shrinks after the check
    ds.skip_bad_videos = False
    with pytest.raises(BadVideoError) as e:
        ds[0]
    assert "has 11 frames" in str(e.value) and "fewer than the 12" in str(e.value)
    (tmp_path / "bad.txt").write_text("f/v1 twelve 1\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: total_frames 'twelve' is not an integer"):
        parse_rawframe_list(str(tmp_path / "bad.txt"))


def _listed(tmp_path, n_ok, n_missing, corrupt=False):
    src = write_coded(tmp_path / "ok.mp4", 24)
    lines = []
    for i in range(n_ok):
        shutil.copy(src, tmp_path / f"v{i}.mp4")
        lines.append(f"v{i}.mp4 {i % 2}")
    for i in range(n_missing):
        lines.append(f"gone{i}.mp4 0")
    if corrupt:
        (tmp_path / "bad.mp4").write_bytes(b"\x00" * 300)
        lines.append("bad.mp4 1")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    return {"dataset": "video_list", "root": str(tmp_path), "clip_len": 4, "frame_interval": 4,
            "train_scale": [32, 36], "crop_size": 32, "test_scale": 32}  # fmt: skip


def test_missing_videos_are_an_error_naming_them(tmp_path):
    data = _listed(tmp_path, 2, 7)
    with pytest.raises(FileNotFoundError) as e:
        build_video_dataset(data, "train", train=True)
    msg = str(e.value)
    lst = tmp_path / "train.txt"
    assert msg.startswith(f"{lst}: 7 of 9 videos missing: {tmp_path / 'gone0.mp4'} ({lst}:3), ")
    assert "and 2 more; " in msg and msg.endswith("set data.skip_bad_videos=true to skip them")
    assert "gone4.mp4" in msg and "gone5.mp4" not in msg


def test_skip_bad_videos_counts_missing_and_undecodable(tmp_path):
    data = {**_listed(tmp_path, 3, 2, corrupt=True), "skip_bad_videos": True}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = build_video_dataset(data, "train", train=True)
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and "skipping 2 of 6 videos, missing (data.skip_bad_videos=true)" in msgs[0]
    assert "gone0.mp4" in msgs[0] and "gone1.mp4" in msgs[0]
    assert len(ds) == 4 and ds[3] is None  # bad.mp4 cannot be decoded: dropped by the collate
    x, y, skipped = collate_skip_bad([ds[i] for i in range(4)])
    assert x.shape == (3, 3, 4, 32, 32) and y.tolist() == [0, 1, 0] and skipped == 1
    loader = DataLoader(ds, batch_size=4, collate_fn=collate_skip_bad)
    assert next(iter(loader))[2] == 1
    data["skip_bad_videos"] = False
    with pytest.raises(FileNotFoundError):
        build_video_dataset(data, "train", train=True)
    with pytest.raises(BadVideoError, match=r"bad.mp4: corrupt, truncated, or not a video"):
        VideoTrainDataset(ds.records, ds.classes, 4, 4, ds.transform)[3]


def test_thirty_views_clip_major(tmp_path):
    """Frame i has green 5 i, red = x: each view's first frame and left column say which
    clip and crop it is."""
    n, h, w = 40, 32, 48
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 0] = np.arange(w, dtype=np.uint8)[None, None] * 5
    frames[..., 1] = (np.arange(n, dtype=np.uint8) * 5)[:, None, None]
    write_frame_folder(tmp_path / "v", frames, "img_{:05d}.png")
    (tmp_path / "val.txt").write_text("v 40 0\n")
    data = {"dataset": "rawframes", "root": str(tmp_path), "filename_tmpl": "img_{:05d}.png", "clip_len": 4,
            "frame_interval": 3, "test_scale": 32, "mean": [0, 0, 0], "std": [1, 1, 1]}  # fmt: skip
    ds = build_video_dataset(data, "val", train=False)
    assert isinstance(ds, VideoTestDataset) and ds.num_views == 30
    views, label = ds[0]
    assert views.shape == (30, 3, 4, 32, 32) and label == 0
    starts = eval_clip_indices(n, 4, 3, 10)[:, 0]  # 0 .. 40 - 10 = 30 in 10 steps
    assert starts.tolist() == [0, 3, 7, 10, 13, 17, 20, 23, 27, 30]
    for v in range(30):
        clip, crop = divmod(v, 3)
        got = (views[v] * 255).round().long()
        assert got[1, :, 0, 0].tolist() == [5 * (starts[clip] + 3 * t) for t in range(4)]
        assert got[0, 0, 0, 0].item() == 5 * [0, 8, 16][crop]  # x offsets of the 3 crops of 32 in 48
    few = build_video_dataset(data, "val", train=False, views=(2, 1))
    assert few.num_views == 2 and few[0][0].shape == (2, 3, 4, 32, 32)


def test_test_views_of_a_video_file_and_load_video_views(tmp_path):
    p = write_coded(tmp_path / "v.mp4", 40)
    data = {"clip_len": 4, "frame_interval": 2, "test_scale": 32, "mean": [0, 0, 0], "std": [1, 1, 1]}
    x = load_video_views(p, data, (3, 3))
    assert x.shape == (9, 3, 4, 32, 32)
    starts = eval_clip_indices(40, 4, 2, 3)[:, 0].tolist()  # [0, 16, 33]
    for v in range(9):
        frame = (x[v][:, 0].permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()
        assert frame_index(frame) == starts[v // 3]
    with pytest.raises(FileNotFoundError, match="video not found"):
        load_video_views(str(tmp_path / "nope.mp4"), data)


def test_per_sample_seeding(tmp_path):
    data = _listed(tmp_path, 4, 0)
    ds = EpochSeeded(build_video_dataset(data, "train", train=True), seed=7)
    before = torch.get_rng_state()
    a = [ds[i][0] for i in range(4)]
    assert torch.equal(torch.get_rng_state(), before)  # the main process' generator is untouched
    assert all(torch.equal(x, ds[i][0]) for i, x in enumerate(a))  # same (seed, epoch, index)
    ds.set_epoch(1)
    assert any(not torch.equal(x, ds[i][0]) for i, x in enumerate(a))
    ds0 = ds.dataset
    r1 = ds0.sample(0, np.random.default_rng(3))[0]
    assert torch.equal(r1, ds0.sample(0, np.random.default_rng(3))[0])


def test_factory_errors_and_relabelling(tree):
    root, _ = tree
    with pytest.raises(ValueError) as e:
        build_video_dataset({"dataset": "youtube", "root": str(root)}, "train", train=True)
    assert str(e.value) == ("data.dataset='youtube' is not a video dataset; choose one of video_list, "
                            "video_folder, kinetics, rawframes, synthetic_video")  # fmt: skip
    with pytest.raises(ValueError, match="data.root is required for data.dataset=kinetics"):
        build_video_dataset({"dataset": "kinetics", "root": None}, "train", train=True)
    with pytest.raises(FileNotFoundError, match=r"data.val_list: video_list list not found: .*val.txt"):
        build_video_dataset({"dataset": "video_list", "root": str(root)}, "val", train=False)
    ds = build_video_dataset({"dataset": "video_folder", "root": str(root)}, "train", train=True,
                             classes=["yoga", "air drumming", "abseiling"])  # fmt: skip
    assert ds.classes == ["yoga", "air drumming", "abseiling"] and ds.targets == [2, 2, 1, 0, 0]
    ds.samples = [(p, 2 - t) for p, t in ds.samples]  # what ClassificationTask.align_classes does
    assert ds.targets == [0, 0, 1, 2, 2]
