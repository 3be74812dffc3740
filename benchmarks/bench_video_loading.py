"""Video loading speed: training clips per second of a DataLoader over generated videos,
against the time of a slow-only ResNet-18 training step, CPU.

    python benchmarks/bench_video_loading.py [--videos 20] [--frames 64] [--batch 4]
        [--steps 2] [--workers 0 2] [--threads 2]

Writes ``--videos`` mpeg4 videos of 340 x 256 px (``--frames`` frames at 25 fps, a moving
textured scene at about 1 Mbit/s, Kinetics-like) into a temporary folder, reads them as a
``video_list`` set with the training pipeline of the paper (8 x 8 sampling: 8 frames one
every 8th; short side to [256, 320], random 224 crop, flip; :mod:`gcnet.data.video`), and
times: the decode alone, the whole item (decode + transform), a DataLoader with each worker
count, and a training step of ``slowonly_r18`` (``gcnet.models.video``; SGD, cross-entropy,
float32) on a batch of the same size. Prints "loading time per batch / step time": below 1
the loader keeps up with the model (with that many workers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from gcnet.data import collate_skip_bad  # noqa: E402
from gcnet.data.seeding import EpochSeeded  # noqa: E402
from gcnet.data.video import build_video_dataset  # noqa: E402
from gcnet.data.video_io import read_video_frames, write_video  # noqa: E402
from gcnet.data.video_transforms import train_clip_indices  # noqa: E402


def write_videos(root: str, n: int, frames: int, h: int = 256, w: int = 340) -> float:
    """``n`` videos of a moving smooth texture with noise; returns the seconds it took."""
    t0 = time.perf_counter()
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    lines = []
    for i in range(n):
        fx, fy, ph = rng.uniform(0.01, 0.05, 2).tolist() + [rng.uniform(0, 6.28)]
        clip = np.empty((frames, h, w, 3), np.uint8)
        for f in range(frames):
            base = 0.5 + 0.25 * np.sin(fx * (xx + 3 * f) + ph) + 0.25 * np.cos(fy * (yy - 2 * f))
            img = np.stack([base, base[::-1], 1 - base], -1) * 220
            img += rng.normal(0, 6, (h, w, 1)).astype(np.float32)
            clip[f] = np.clip(img, 0, 255)
        rel = f"videos/v{i:03d}.mp4"
        write_video(os.path.join(root, rel), clip, fps=25, bit_rate=1_000_000, quality=None)
        lines.append(f"{rel} {i % 10}\n")
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.writelines(lines)
    return time.perf_counter() - t0


def time_loader(ds, batch: int, workers: int, clips: int) -> float:
    """Clips per second over ``clips`` clips (after one warm-up batch)."""
    loader = DataLoader(EpochSeeded(ds, 0), batch_size=batch, shuffle=True, num_workers=workers,
                        collate_fn=collate_skip_bad, drop_last=True,
                        persistent_workers=workers > 0)  # fmt: skip
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    while n < clips:
        for x, _, _ in it:
            n += x.shape[0]
            if n >= clips:
                break
        else:
            it = iter(loader)
    return n / (time.perf_counter() - t0)


def step_time(batch: int, steps: int, crop: int, clip_len: int) -> tuple[float, str]:
    try:
        from gcnet import create_model

        model, what = create_model("slowonly_r18", num_classes=400), "slowonly_r18 (gcnet.models.video)"
    except Exception as e:  # noqa: BLE001 - the stand-in below says so
        print(f"slowonly_r18 unavailable ({type(e).__name__}: {e}); timing a 3D conv stand-in")
        from torch import nn

        model = nn.Sequential(nn.Conv3d(3, 64, (1, 7, 7), (1, 2, 2), (0, 3, 3)), nn.ReLU(),
                              nn.Conv3d(64, 128, (3, 3, 3), (1, 2, 2), 1), nn.ReLU(),
                              nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(128, 400))  # fmt: skip
        what = "a 3D conv stand-in"
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch, 3, clip_len, crop, crop), torch.randint(0, 400, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps, what


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--clips", type=int, default=40, help="clips timed per loader setting")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the training step")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = {"dataset": "video_list", "clip_len": 8, "frame_interval": 8, "train_scale": [256, 320],
            "crop_size": 224}  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        secs = write_videos(root, args.videos, args.frames)
        size = sum(
            os.path.getsize(os.path.join(root, "videos", f)) for f in os.listdir(os.path.join(root, "videos"))
        )
        print(f"wrote {args.videos} videos of 340x256 x {args.frames} frames in {secs:.1f} s "
              f"({size / args.videos / 1e3:.0f} kB each)")  # fmt: skip
        ds = build_video_dataset({**data, "root": root}, "train", train=True)
        paths = [r.path for r in ds.records]
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for p in paths:
            read_video_frames(p, train_clip_indices(args.frames, 8, 8, rng))
        decode = (time.perf_counter() - t0) / len(paths)
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds.sample(i, rng)
        item = (time.perf_counter() - t0) / len(ds)
        print(f"per clip, main process: decode {1e3 * decode:.1f} ms, decode + transform {1e3 * item:.1f} ms")
        rates = {w: time_loader(ds, args.batch, w, args.clips) for w in args.workers}
    step, what = step_time(args.batch, args.steps, 224, 8)
    print(f"training step of {what}, batch {args.batch} x 3 x 8 x 224 x 224, CPU float32, "
          f"{args.threads} threads: {step:.2f} s")  # fmt: skip
    for w, r in rates.items():
        per_batch = args.batch / r
        print(f"DataLoader num_workers={w}: {r:.1f} clips/s, {per_batch:.2f} s per batch of {args.batch}; "
              f"loading time per batch / step time = {per_batch / step:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
