"""The embedded video set: generated ``.mp4`` clips whose label needs two events that lie far
apart in *time*, beyond the reach of a plain slow-only network.

Every video (``image_size`` x ``image_size`` px, ``num_frames`` frames; the demo's 32 x 32 x 16)
has a flat grey background (level 128) and, with ``q = 3 n / 8`` and ``m = n / 16`` for
``n = image_size`` and ``T = num_frames``:

- the **cue**: a square of side ``q``, *white* or *black*, in the top-left corner (``m`` px
  from the edges, jittered by up to ``n / 16``), shown only in the *first* ``T / 4`` frames
  (0-3 of 16);
- the **target**: a disc of diameter ``q`` in one of 4 palette colours (red, green, blue,
  yellow), in the bottom-right corner (mirrored placement), shown only in the *last*
  ``T / 4`` frames (12-15 of 16); nothing in between.

The label is a colour: the target's own colour after a white cue, its opposite on the colour
wheel (red <-> blue, green <-> yellow) after a black one::

    label = (target colour + 2 * [cue is black]) mod 4      0 red  1 green  2 blue  3 yellow

The cue and the target colour are drawn uniformly and independently (in the validation split
they cycle instead: video ``i`` has cue ``i % 2`` and colour ``(i // 2) % 4``, so every pair is
equally frequent and the first videos show both cues): the cue alone says nothing about the
label, the target alone narrows it to two classes, only both decide it.

**Why a plain slow-only network cannot solve it.** Sampled 8x2 (8 frames, one every 2nd: the
demo's `demo_video.yaml`), the cue is in clip frames 0-1 and the target in clip frames 6-7,
5 frames apart. Slow-only networks have no temporal convs before the late stages;
``slowonly_tiny`` has two 3x1x1 convs (c4, c5), so every position of its last feature map
sees a window of 5 consecutive frames (`gcnet.models.video.SlowOnlyTiny`): none sees a cue
frame *and* a target frame. Global average pooling and a linear classifier then score each
class as ``f(cue) + g(target)``, and no such additive score gets more than 3 of the 4
videos ``(white, a), (black, a), (white, a+2), (black, a+2)`` right (the difference of the
scores of classes ``a`` and ``a+2`` would have to be positive on the first and last and
negative on the two others, but the two sums are equal): at most 75% video top-1, and 50% by
reading the target alone (`blind_oracle_label`). A context block (GC, NL) pools over all
T x H x W positions and can combine the two; `oracle_label`, hand-written with global
information, reads both from the decoded frames and gets every video right. The tests check
all of this on the network itself (``tests/data/test_synthetic_video.py``).

The colours are flat and encoded near losslessly (mpeg4, quantiser 1-2), so they survive
decoding.

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
from typing import NamedTuple

import numpy as np

from .synthetic import _PALETTE
from .video_io import write_video

__all__ = [
    "SYNTHETIC_VIDEO_CLASSES",
    "VideoLayout",
    "blind_oracle_label",
    "generate_synthetic_videos",
    "oracle_label",
    "paint_video",
    "render_synthetic_video",
    "video_layout",
]

SYNTHETIC_VIDEO_CLASSES = ("red", "green", "blue", "yellow")
_PALETTE_U8 = _PALETTE.astype(np.uint8)  # red, green, blue, yellow: the 4 classes' colours
CUE_LEVELS = (235, 20)  # white, black
BACKGROUND = 128
_SPLIT_SEED = {"train": 0, "val": 1}
_FORMAT = "gcnet synthetic_video"
_VERSION = 2


class VideoLayout(NamedTuple):
    """What video ``index`` shows: ``cue`` 0 white / 1 black, the target's colour (0..3),
    the label, the cue square's top-left corner, the target disc's centre, and their side /
    diameter ``size``; the cue is in frames ``cue_frames``, the target in ``target_frames``."""

    cue: int
    target: int
    label: int
    cue_corner: tuple[int, int]
    target_centre: tuple[float, float]
    size: int
    cue_frames: range
    target_frames: range


def _check(image_size: int, num_frames: int) -> None:
    if image_size < 32 or image_size % 2:
        raise ValueError(f"synthetic_video image_size must be even and >= 32, got {image_size}")
    if num_frames < 8:
        raise ValueError(f"synthetic_video num_frames must be >= 8, got {num_frames}")


def video_layout(
    index: int, split: str = "train", seed: int = 0, image_size: int = 32, num_frames: int = 16
) -> VideoLayout:
    """The `VideoLayout` of video ``index`` of ``split`` (see the module docstring)."""
    if split not in _SPLIT_SEED:
        raise ValueError(f"split must be one of {tuple(_SPLIT_SEED)}, got {split!r}")
    _check(image_size, num_frames)
    n, t = image_size, num_frames
    rng = np.random.default_rng([seed % 2**32, _SPLIT_SEED[split], index])
    cue, target = int(rng.integers(2)), int(rng.integers(4))
    if split == "val":  # balanced: every (cue, colour) pair once in each 8 consecutive videos
        cue, target = index % 2, (index // 2) % 4
    q, m, jit = 3 * n // 8, n // 16, n // 16
    cy, cx = (m + int(v) for v in rng.integers(0, jit + 1, size=2))
    ty, tx = (n - m - q / 2 - int(v) for v in rng.integers(0, jit + 1, size=2))
    return VideoLayout(cue, target, (target + 2 * cue) % 4, (cy, cx), (ty, tx), q,
                       range(0, t // 4), range(t - t // 4, t))  # fmt: skip


def paint_video(layout: VideoLayout, image_size: int = 32, num_frames: int = 16) -> np.ndarray:
    """uint8 ``(num_frames, image_size, image_size, 3)`` frames showing ``layout``."""
    n, q = image_size, layout.size
    video = np.full((num_frames, n, n, 3), BACKGROUND, np.uint8)
    cy, cx = layout.cue_corner
    video[layout.cue_frames.start : layout.cue_frames.stop, cy : cy + q, cx : cx + q] = CUE_LEVELS[layout.cue]
    ty, tx = layout.target_centre
    yy, xx = np.ogrid[:n, :n]
    disc = (yy - ty + 0.5) ** 2 + (xx - tx + 0.5) ** 2 <= (q / 2) ** 2
    video[layout.target_frames.start : layout.target_frames.stop, disc] = _PALETTE_U8[layout.target]
    return video


def render_synthetic_video(
    index: int, split: str = "train", seed: int = 0, image_size: int = 32, num_frames: int = 16
) -> tuple[np.ndarray, int]:
    """uint8 ``(num_frames, image_size, image_size, 3)`` frames and the label of video
    ``index`` of ``split`` (see the module docstring)."""
    layout = video_layout(index, split, seed, image_size, num_frames)
    return paint_video(layout, image_size, num_frames), layout.label


def _read_events(frames: np.ndarray) -> tuple[int, int]:
    """(cue 0 white / 1 black, target colour) read from decoded ``(T, H, W, 3)`` frames: the
    mean of the top-left quadrant in the first frame, the nearest palette colour to the most
    saturated pixels of the bottom-right quadrant in the last frame."""
    n = frames.shape[1]
    cue = 1 if frames[0, : n // 2, : n // 2].astype(np.float32).mean() < BACKGROUND else 0
    last = frames[-1, n // 2 :, n // 2 :].reshape(-1, 3).astype(np.float32)
    spread = last.max(1) - last.min(1)
    rgb = last[spread >= np.percentile(spread, 90)].mean(0)
    return cue, int(np.linalg.norm(_PALETTE - rgb, axis=1).argmin())


def oracle_label(frames: np.ndarray) -> int:
    """A hand-written solution with global information: read the cue from the first frame and
    the target from the last, then apply the rule (frames: a decoded video or clip that
    starts in the cue's frames and ends in the target's)."""
    cue, target = _read_events(frames)
    return (target + 2 * cue) % 4


def blind_oracle_label(frames: np.ndarray) -> int:
    """The best a model that cannot relate the two events does by reading one of them: the
    target read exactly, the cue guessed (white): right on half of the videos."""
    return _read_events(frames)[1]


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
    image_size: int = 32,
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
