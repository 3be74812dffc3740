"""Tiny test videos whose frames say which frame they are."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from gcnet.data.video_io import write_video

H, W = 32, 40
MARK = (200, 30, 30)  # a constant corner mark: keeps the encoder's GOP regular (no scene cuts)


def coded_frames(n: int, h: int = H, w: int = W) -> np.ndarray:
    """Frame i: grey level 20 + 5 i (i < 47) with a constant red mark in the top-left corner."""
    assert n <= 47
    f = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        f[i] = 20 + 5 * i
        f[i, :8, :8] = MARK
    return f


def frame_index(frame: np.ndarray) -> int:
    """The index a decoded coded frame shows (from its centre grey level)."""
    h, w = frame.shape[:2]
    v = frame[h // 2 - 4 : h // 2 + 4, w // 2 - 8 : w // 2 + 8].astype(np.float64).mean()
    return int(round((v - 20) / 5))


def write_coded(path, n: int = 40, **kw) -> str:
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    return write_video(str(path), coded_frames(n), **kw)


def write_frame_folder(folder, frames: np.ndarray, tmpl: str = "img_{:05d}.png") -> str:
    os.makedirs(folder, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(folder, tmpl.format(i + 1)))
    return str(folder)
