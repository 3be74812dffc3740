"""The embedded video set: generated ``.mp4`` clips whose label needs context that is far
apart in space *and* time.

Every video (``image_size`` x ``image_size`` px, ``num_frames`` frames, default 64 x 64 x 16)
has a flat grey background (a random level per video) and, with ``s = n // 4`` and
``m = n // 16`` for ``n = image_size``:

- the **cue**: a filled square of side ``s`` in the *top-left* corner (``m`` px from the
  edges, jittered by up to ``n // 32``), visible only in the *first* ``max(2, T // 4)`` frames
  (0-3 of 16);
- the **target**: a filled disc of diameter ``s`` in the *bottom-right* corner (mirrored
  placement), visible only in the *last* ``max(3, 3 T // 8)`` frames (10-15 of 16);
- **distractors**: a plus sign in the top-right and one in the bottom-left corner, each shown
  for a random window of 3-5 frames, and a small square moving left to right across the
  middle band all video long; all in random palette colours.

Colours come from a wheel of 4 (red, green, blue, yellow); the label is the step from the
cue's colour to the target's on it::

    0 same_color    1 next_color    2 opposite_color    3 previous_color

The cue colour and the label are drawn uniformly, so the cue alone, the target alone, and
any distractor say nothing about the label. The two events lie in opposite corners (about
0.6 n apart, over 3/4 of the frame diagonally) and at least ``T / 4`` frames apart, so no
local window in space-time sees both: a network whose last stage has a small receptive field
and then averages its features (global average pooling, then a linear classifier) scores each
class as ``f(cue colour) + g(target colour)``, an additive function, which cannot represent the
relation (already its same / not-same part is an XOR). It has to bring the early top-left
evidence and the late bottom-right evidence together, which is what context blocks do.

Colours are flat and encoded near losslessly (mpeg4, quantiser 1-2), so they survive
decoding; the tests read them back at the known positions with a hand-written oracle.

On disk (the ``video_list`` format, read back by `gcnet.data.video.build_video_dataset`)::

    root/videos/train_00000.mp4 ...   root/train.txt, root/val.txt  ("videos/x.mp4 label")
    root/classes.txt                  root/manifest.json (the generation parameters)

`generate_synthetic_videos` reuses a folder whose manifest matches the parameters and
regenerates otherwise; it writes into a temporary folder next to ``root`` and renames it into
place, so readers (and concurrent DDP ranks) never see a half-written set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from .synthetic import _PALETTE
from .video_io import write_video

__all__ = [
    "SYNTHETIC_VIDEO_CLASSES",
    "generate_synthetic_videos",
    "render_synthetic_video",
]

SYNTHETIC_VIDEO_CLASSES = ("same_color", "next_color", "opposite_color", "previous_color")
_PALETTE_U8 = _PALETTE.astype(np.uint8)
_SPLIT_SEED = {"train": 0, "val": 1}
_FORMAT = "gcnet synthetic_video"
_VERSION = 1


def _check(image_size: int, num_frames: int) -> None:
    if image_size < 32 or image_size % 2:
        raise ValueError(f"synthetic_video image_size must be even and >= 32, got {image_size}")
    if num_frames < 8:
        raise ValueError(f"synthetic_video num_frames must be >= 8, got {num_frames}")


def _plus(img: np.ndarray, y0: int, x0: int, s: int, color: np.ndarray) -> None:
    w = max(1, s // 4)
    c = s // 2
    img[y0 : y0 + s, x0 + c - w // 2 - 1 : x0 + c + w // 2 + 1] = color
    img[y0 + c - w // 2 - 1 : y0 + c + w // 2 + 1, x0 : x0 + s] = color


def render_synthetic_video(
    index: int, split: str = "train", seed: int = 0, image_size: int = 64, num_frames: int = 16
) -> tuple[np.ndarray, int]:
    """uint8 ``(num_frames, image_size, image_size, 3)`` frames and the label of video
    ``index`` of ``split`` (see the module docstring)."""
    if split not in _SPLIT_SEED:
        raise ValueError(f"split must be one of {tuple(_SPLIT_SEED)}, got {split!r}")
    _check(image_size, num_frames)
    n, t = image_size, num_frames
    rng = np.random.default_rng([seed % 2**32, _SPLIT_SEED[split], index])
    label = int(rng.integers(4))
    cue = int(rng.integers(4))
    target = (cue + label) % 4
    s, m, jit = n // 4, n // 16, n // 32
    cue_frames = max(2, t // 4)
    target_frames = max(3, 3 * t // 8)
    grey = int(rng.integers(70, 160))
    video = np.full((t, n, n, 3), grey, np.uint8)
    # cue: top-left square, first frames
    cy, cx = (m + int(v) for v in rng.integers(0, jit + 1, size=2))
    video[:cue_frames, cy : cy + s, cx : cx + s] = _PALETTE_U8[cue]
    # target: bottom-right disc, last frames
    ty, tx = (n - m - s // 2 - int(v) for v in rng.integers(0, jit + 1, size=2))  # centre
    yy, xx = np.ogrid[:n, :n]
    disc = (yy - ty + 0.5) ** 2 + (xx - tx + 0.5) ** 2 <= (s / 2) ** 2
    video[t - target_frames :, disc] = _PALETTE_U8[target]
    # distractors: plus signs in the other two corners, a square moving across the middle
    for y0, x0 in ((m, n - m - s), (n - m - s, m)):
        start = int(rng.integers(0, t - 2))
        length = int(rng.integers(3, 6))
        color = _PALETTE_U8[int(rng.integers(4))]
        for f in range(start, min(t, start + length)):
            _plus(video[f], y0, x0, s, color)
    side = max(2, n // 8)
    color = _PALETTE_U8[int(rng.integers(4))]
    y0 = n // 2 - side // 2
    for f in range(t):
        x0 = m + round((n - 2 * m - side) * f / (t - 1))
        video[f, y0 : y0 + side, x0 : x0 + side] = color
    return video, label


def _manifest(seed: int, train_size: int, val_size: int, image_size: int, num_frames: int) -> dict:
    return {"format": _FORMAT, "version": _VERSION, "seed": int(seed), "train_size": int(train_size),
            "val_size": int(val_size), "image_size": int(image_size), "num_frames": int(num_frames),
            "classes": list(SYNTHETIC_VIDEO_CLASSES)}  # fmt: skip


def _read_manifest(root: str) -> dict | None:
    try:
        with open(os.path.join(root, "manifest.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _complete(root: str, want: dict) -> bool:
    if _read_manifest(root) != want:
        return False
    names = ("train.txt", "val.txt", "classes.txt")
    if not all(os.path.isfile(os.path.join(root, p)) for p in names):
        return False
    vids = os.path.join(root, "videos")
    return os.path.isdir(vids) and len(os.listdir(vids)) == want["train_size"] + want["val_size"]


def generate_synthetic_videos(
    root: str,
    seed: int = 0,
    train_size: int = 240,
    val_size: int = 60,
    image_size: int = 64,
    num_frames: int = 16,
) -> str:
    """Write the synthetic video set into ``root`` (or reuse the one there when its manifest
    matches these parameters); returns ``root``. ``root`` may be missing, empty, or a folder
    this function wrote; any other existing folder is refused (nothing of a user's deleted)."""
    _check(image_size, num_frames)
    if train_size < 1 or val_size < 1:
        raise ValueError(
            f"synthetic_video train_size and val_size must be >= 1, got {train_size} and {val_size}"
        )
    root = os.path.abspath(root)
    want = _manifest(seed, train_size, val_size, image_size, num_frames)
    if _complete(root, want):
        return root
    if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        got = _read_manifest(root) if os.path.isdir(root) else None
        if not (isinstance(got, dict) and got.get("format") == _FORMAT):
            raise FileExistsError(f"data.root={root} exists and is not a synthetic_video folder (no "
                                  f"manifest.json of one); give an empty or new folder")  # fmt: skip
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        os.makedirs(os.path.join(tmp, "videos"))
        for split, size in (("train", train_size), ("val", val_size)):
            lines = []
            for i in range(size):
                frames, label = render_synthetic_video(i, split, seed, image_size, num_frames)
                rel = f"videos/{split}_{i:05d}.mp4"
                write_video(os.path.join(tmp, rel), frames, fps=8)
                lines.append(f"{rel} {label}\n")
            with open(os.path.join(tmp, f"{split}.txt"), "w") as f:
                f.writelines(lines)
        with open(os.path.join(tmp, "classes.txt"), "w") as f:
            f.writelines(c + "\n" for c in SYNTHETIC_VIDEO_CLASSES)
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(want, f, indent=1)
        old = None
        if os.path.isdir(root) and os.listdir(root):  # our own folder, other parameters
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.old-", dir=parent)
            try:
                os.rename(root, os.path.join(old, "set"))
            except FileNotFoundError:  # another process moved it first
                pass
        try:
            os.rename(tmp, root)  # atomic; replaces a missing or empty folder
        except OSError:
            if not _complete(root, want):  # another process won with other parameters
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
