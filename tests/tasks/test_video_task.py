"""The video task end to end through the CLI on the embedded synthetic set (tiny): train,
eval (views), predict against a forward pass computed here from frames decoded with PyAV
directly, analyze attention (PNG strip + GIF) and cosine on a video NL model, info."""

import json
import os

import av
import numpy as np
import pytest
import torch

from gcnet.cli import main

from ..data.video_helpers import write_coded

TINY = [
    "model.name=gc_slowonly_r18",
    "data.image_size=32",
    "data.train_size=8",
    "data.val_size=4",
    "data.num_workers=0",
    "data.video.clip_len=4",
    "data.video.frame_interval=4",
    "data.video.train_scale=[32,32]",
    "data.video.crop_size=32",
    "data.video.test_scale=32",
    "data.video.num_clips=2",
    "data.video.num_crops=1",
    "train.batch_size=4",
    "train.epochs=1",
]


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("video_run")
    sets = [x for t in TINY for x in ("--set", t)]
    assert main(["train", "-c", "demo_video", "--no-progress", *sets, "--set", f"data.root={out / 'data'}",
                 "-o", str(out / "run")]) == 0  # fmt: skip
    return out


def test_train_writes_a_video_run(video_run, capsys):
    hist = [json.loads(line) for line in open(video_run / "run" / "metrics.jsonl")]
    assert {"val_top1", "val_clip_top1", "val_mean_class_accuracy"} <= set(hist[-1])
    assert os.path.isfile(video_run / "data" / "val.txt")


def test_eval_scores_the_configured_views(video_run, capsys):
    assert main(["eval", "--checkpoint", str(video_run / "run" / "best.pth"), "--no-progress",
                 "--set", "data.video.num_clips=3"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "4 videos x 3 views" in text and "mean class accuracy" in text
    m = json.load(open(video_run / "run" / "eval" / "metrics.json"))
    assert m["num_samples"] == 4 and m["num_clips"] == 12 and m["views_per_video"] == 3
    assert len(m["confusion_matrix"]) == 4 and (video_run / "run" / "eval" / "confusion_matrix.png").exists()


def _decode_all(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_predict_equals_a_forward_pass_by_hand(video_run, tmp_path, capsys):
    """A 24-frame 32x40 video, 2 clips x 1 crop at 4x2 sampling: mmaction2 1.x's test offsets
    round(k * max_offset / (clips - 1)), max_offset = 24 - ((4 - 1) * 2 + 1) = 17, give frames
    0,2,4,6 and 17,19,21,23; short side 32 = no resize; the centre crop is columns 4..35."""
    import gcnet
    from gcnet.engine.checkpoint import load_checkpoint

    video = write_coded(tmp_path / "clip.mp4", n=24)
    ckpt = str(video_run / "run" / "best.pth")
    assert main(["predict", video, "--checkpoint", ckpt, "--json", "--topk", "4",
                 "--set", "data.video.frame_interval=2"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)[0]
    assert res["video"] == video and res["views"] == 2

    ck = load_checkpoint(ckpt)
    model = gcnet.create_model("gc_slowonly_r18", num_classes=4)
    model.load_state_dict(ck["model"])
    model.eval()
    frames = _decode_all(video)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    probs = []
    for idx in ([0, 2, 4, 6], [17, 19, 21, 23]):
        clip = torch.from_numpy(frames[idx][:, :, 4:36]).permute(3, 0, 1, 2).float() / 255  # C,T,H,W
        with torch.no_grad():
            probs.append(model(((clip - mean) / std)[None]).softmax(-1)[0])
    p = torch.stack(probs).mean(0)
    order = p.argsort(descending=True).tolist()
    assert [t["class"] for t in res["top"]] == [ck["classes"][i] for i in order]
    assert [t["prob"] for t in res["top"]] == pytest.approx(p[order].tolist(), abs=1e-5)


def test_predict_on_a_file_that_is_no_video(video_run, tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    assert main(["predict", str(bad), "--checkpoint", str(video_run / "run" / "best.pth")]) == 2
    err = capsys.readouterr().err
    assert "notes.mp4" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_analyze_attention_draws_frames_and_a_gif(video_run, tmp_path, capsys):
    from PIL import Image

    video = sorted((video_run / "data" / "videos").glob("val_*.mp4"))[0]
    out = tmp_path / "att"
    assert main(["analyze", "attention", str(video), "--checkpoint", str(video_run / "run" / "best.pth"),
                 "-o", str(out)]) == 0  # fmt: skip
    stem = video.stem
    assert (out / f"{stem}_attention.png").exists()
    gif = Image.open(out / f"{stem}_attention.gif")
    assert gif.n_frames == 4  # one GIF frame per clip frame (clip_len 4)


def test_analyze_cosine_on_a_video_nl_model(tmp_path, capsys):
    """The paper's Table 1 study on a 3D NL model: attention over T x H x W positions; the
    input features differ between positions, NL's attention maps almost don't at init."""
    out = tmp_path / "cos"
    assert main(["analyze", "cosine", "--model", "nl_slowonly_r18", "--set", "num_classes=4",
                 "--input", "1x3x4x32x32", "--num-images", "2", "-o", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "2 videos" in text
    rows = (out / "cosine.csv").read_text().splitlines()
    assert rows[0].startswith("stage,blocks,input,output,attention")
    assert {r.split(",")[0] for r in rows[1:]} == {"c3", "c4"}


def test_info_on_a_video_checkpoint_uses_its_clip_size(video_run, capsys):
    assert main(["info", "--checkpoint", str(video_run / "run" / "best.pth")]) == 0
    assert "input: 1x3x4x32x32" in capsys.readouterr().out
    assert main(["info", "gc5_slowonly_r50"]) == 0
    text = capsys.readouterr().out
    assert "input: 1x3x8x224x224" in text and "(5 blocks)" in text
