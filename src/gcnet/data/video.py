"""Video datasets: the annotation formats users have, clip sampling, clip transforms.

Formats (each parser gives records and the class names):

- ``video_list``: a list file of ``relative/path.mp4 label`` lines (mmaction2's VideoDataset,
  SlowFast's ``train.csv`` / ``val.csv`` with a space separator); the path is everything before
  the last blank, so paths may hold spaces; blank lines and ``#`` comments are skipped.
  Classes: a classes file (one name a line, line k = label k; ``<root>/classes.txt`` when
  present), else ``num_classes`` names ``"0" .. "K-1"``, else as many as the largest label in
  the train and val lists needs.
- ``video_folder``: ``<split folder>/<class>/*.mp4`` (also mkv, webm, avi, mov, m4v);
  classes = the sorted class folder names (the val split takes the train split's).
- ``kinetics``: the CSVs ``label,youtube_id,time_start,time_end,split`` (a header line), clips
  at ``<video dir>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (the label folder also
  with ``_`` for blanks; without label folders, flat in the video dir; ``.webm`` / ``.mkv``
  where no ``.mp4`` is); class ids = the sorted unique labels of the train CSV, which the
  val split uses too (pass ``classes`` to give them explicitly).
- ``rawframes``: ``dir total_frames label`` lines; frame ``i`` of a clip (0-based) is
  ``filename_tmpl.format(i + 1)`` in ``dir`` (``img_00001.jpg`` ...).

Missing videos (every real Kinetics download has them) are found up front: with
``skip_bad_videos`` they are left out with one warning giving their count and the first few;
without it they are an error naming the first ones. A video that fails to decode later is,
with ``skip_bad_videos``, returned as ``None``, which `collate_skip_bad`
drops from its batch and counts; otherwise a `BadVideoError` naming the file.

Items: train ``(clip (3, T, H, W) float32, label)``; test ``(views (V, 3, T, H, W) float32,
label)`` with ``V = num_clips * num_crops``, clip-major. Sampling and transforms:
`gcnet.data.video_transforms`; decoding: `gcnet.data.video_io`.

Random draws come from a numpy Generator seeded from torch's global generator at each
``__getitem__``, so `EpochSeeded` (which seeds torch per sample)
makes every clip depend only on (seed, epoch, index); `VideoTrainDataset.sample` takes
an explicit Generator.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .video_io import BadVideoError, VideoReader, count_frame_files, read_frame_folder
from .video_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoTestTransform,
    VideoTrainTransform,
    eval_clip_indices,
    train_clip_indices,
)

__all__ = [
    "VIDEO_DATASETS",
    "VIDEO_EXTENSIONS",
    "BadVideoError",
    "FrameRecord",
    "VideoRecord",
    "VideoTestDataset",
    "VideoTrainDataset",
    "build_video_dataset",
    "check_missing",
    "kinetics_classes",
    "load_video_views",
    "parse_kinetics_csv",
    "parse_rawframe_list",
    "parse_video_list",
    "read_classes_file",
    "scan_video_folder",
]

VIDEO_DATASETS = ("video_list", "video_folder", "kinetics", "rawframes", "synthetic_video")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
_SHOW = 5  # missing videos named in a message


class VideoRecord(NamedTuple):
    """A video file and its label; ``origin`` (``"list.txt:12"``) names where it was listed."""

    path: str
    label: int
    origin: str = ""


class FrameRecord(NamedTuple):
    """A raw-frame folder, its declared frame count and its label."""

    path: str
    total_frames: int
    label: int
    origin: str = ""


# -- parsers ---------------------------------------------------------------------------
def read_classes_file(path: str) -> list[str]:
    """Class names, one a line (line k is label k); blank lines skipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"classes file not found: {path}")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise ValueError(f"{path}: no class names (expected one name a line)")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: class names listed twice: {dup[:10]}")
    return names


def _lines(list_file: str):
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"video list not found: {list_file}")
    with open(list_file, encoding="utf-8") as f:
        for no, raw in enumerate(f, 1):
            line = raw.strip()
            if line and not line.startswith("#"):
                yield no, line


def _label(tok: str, where: str, num_classes: int | None, classes_src: str) -> int:
    try:
        label = int(tok)
    except ValueError:
        raise ValueError(f"{where}: label {tok!r} is not an integer") from None
    if label < 0 or (num_classes is not None and label >= num_classes):
        known = f"{num_classes} classes ({classes_src})" if num_classes is not None else "labels >= 0"
        raise ValueError(f"{where}: label {label} is out of range for {known}")
    return label


def _join(root: str | None, path: str) -> str:
    return path if root is None or os.path.isabs(path) else os.path.join(root, path)


def _class_names(labels: Sequence[int], classes: Sequence[str] | None, num_classes: int | None) -> list[str]:
    if classes is not None:
        return list(classes)
    n = num_classes if num_classes is not None else max(labels) + 1
    return [str(i) for i in range(n)]


def _known(classes: Sequence[str] | None, num_classes: int | None, classes_src: str | None):
    if classes is not None:
        return len(classes), classes_src or "the given class list"
    if num_classes is not None:
        return int(num_classes), classes_src or "num_classes"
    return None, ""


def parse_video_list(
    list_file: str,
    root: str | None = None,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    classes_src: str | None = None,
) -> tuple[list[VideoRecord], list[str]]:
    """``relative/path.mp4 label`` lines -> (records with paths joined to ``root``, classes).

    The class count is ``len(classes)``, else ``num_classes``, else the largest label + 1;
    ``classes_src`` names where it came from in the out-of-range message."""
    n, src = _known(classes, num_classes, classes_src)
    records = []
    for no, line in _lines(list_file):
        where = f"{list_file}:{no}"
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise ValueError(f"{where}: expected '<relative/path> <label>', got {line!r}")
        records.append(VideoRecord(_join(root, parts[0]), _label(parts[1], where, n, src), where))
    if not records:
        raise ValueError(f"{list_file}: no videos listed (expected '<relative/path> <label>' lines)")
    return records, _class_names([r.label for r in records], classes, n)


def parse_rawframe_list(
    list_file: str,
    root: str | None = None,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    classes_src: str | None = None,
) -> tuple[list[FrameRecord], list[str]]:
    """``dir total_frames label`` lines -> (records with folders joined to ``root``, classes)."""
    n, src = _known(classes, num_classes, classes_src)
    records = []
    for no, line in _lines(list_file):
        where = f"{list_file}:{no}"
        parts = line.rsplit(None, 2)
        if len(parts) != 3:
            raise ValueError(f"{where}: expected '<frame dir> <total_frames> <label>', got {line!r}")
        try:
            total = int(parts[1])
        except ValueError:
            raise ValueError(f"{where}: total_frames {parts[1]!r} is not an integer") from None
        if total < 1:
            raise ValueError(f"{where}: total_frames must be >= 1, got {total}")
        records.append(FrameRecord(_join(root, parts[0]), total, _label(parts[2], where, n, src), where))
    if not records:
        raise ValueError(
            f"{list_file}: no frame folders listed (expected '<dir> <total_frames> <label>' lines)"
        )
    return records, _class_names([r.label for r in records], classes, n)


def scan_video_folder(
    folder: str, classes: Sequence[str] | None = None
) -> tuple[list[VideoRecord], list[str]]:
    """``folder/<class>/*.<video ext>`` -> (records, classes); classes = sorted folder names
    unless given (then every class folder must be one of them)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"video folder not found: {folder}")
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not found:
        raise FileNotFoundError(f"no class folders in {folder} (expected {folder}/<class>/<video>)")
    names = list(classes) if classes is not None else found
    idx = {c: i for i, c in enumerate(names)}
    unknown = [c for c in found if c not in idx]
    if unknown:
        raise ValueError(f"class folder(s) of {folder} not among the {len(names)} classes: {unknown[:10]}")
    records, empty = [], []
    for c in found:
        files = sorted(
            os.path.join(dp, f)
            for dp, _, fs in os.walk(os.path.join(folder, c))
            for f in fs
            if f.lower().endswith(VIDEO_EXTENSIONS)
        )
        if not files:
            empty.append(c)
        records += [VideoRecord(p, idx[c], os.path.join(folder, c)) for p in files]
    if empty:
        exts = ", ".join(VIDEO_EXTENSIONS)
        raise FileNotFoundError(f"class folder(s) with no videos ({exts}) in {folder}: {empty[:10]}")
    return records, names


_KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def _kinetics_rows(csv_file: str):
    if not os.path.isfile(csv_file):
        raise FileNotFoundError(f"Kinetics CSV not found: {csv_file}")
    with open(csv_file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in _KINETICS_COLUMNS if c not in fields]
        if missing:
            raise ValueError(f"{csv_file}:1: header {fields} lacks column(s) {missing} (expected "
                             f"'label,youtube_id,time_start,time_end,split')")  # fmt: skip
        reader.fieldnames = fields
        for row in reader:
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}


def kinetics_classes(csv_file: str) -> list[str]:
    """The sorted unique labels of a Kinetics CSV (its class ids)."""
    names = sorted({row["label"] for _, row in _kinetics_rows(csv_file)})
    if not names:
        raise ValueError(f"{csv_file}: no clips listed")
    return names


def parse_kinetics_csv(
    csv_file: str, video_dir: str, classes: Sequence[str] | None = None
) -> tuple[list[VideoRecord], list[str]]:
    """A Kinetics CSV -> (records, classes); classes default to this CSV's sorted labels (give
    the train CSV's for a val CSV: `kinetics_classes`)."""
    rows = list(_kinetics_rows(csv_file))
    if not rows:
        raise ValueError(f"{csv_file}: no clips listed")
    names = list(classes) if classes is not None else sorted({r["label"] for _, r in rows})
    idx = {c: i for i, c in enumerate(names)}
    dirs: dict[str, str] = {}
    records = []
    for no, row in rows:
        where = f"{csv_file}:{no}"
        label = row["label"]
        if label not in idx:
            raise ValueError(f"{where}: label {label!r} is not one of the {len(names)} classes "
                             f"(the train CSV's)")  # fmt: skip
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except ValueError:
            raise ValueError(f"{where}: time_start / time_end {row['time_start']!r}, {row['time_end']!r} "
                             f"are not numbers") from None  # fmt: skip
        if not row["youtube_id"]:
            raise ValueError(f"{where}: empty youtube_id")
        if label not in dirs:
            cands = [os.path.join(video_dir, label), os.path.join(video_dir, label.replace(" ", "_"))]
            dirs[label] = next((d for d in cands if os.path.isdir(d)), video_dir)
        stem = os.path.join(dirs[label], f"{row['youtube_id']}_{start:06d}_{end:06d}")
        path = stem + ".mp4"
        if not os.path.isfile(path):
            path = next((stem + e for e in (".webm", ".mkv") if os.path.isfile(stem + e)), path)
        records.append(VideoRecord(path, idx[label], where))
    return records, names


# -- missing videos ----------------------------------------------------------------------
def _short_folder(r: FrameRecord, filename_tmpl: str) -> str | None:
    """Why a raw-frame folder that exists cannot give its declared frames, or None: its last
    declared frame file is checked (one stat per folder), and counted only when absent."""
    if r.total_frames < 1 or os.path.isfile(os.path.join(r.path, filename_tmpl.format(r.total_frames))):
        return None
    found = count_frame_files(r.path, filename_tmpl, r.total_frames)
    where = f"{r.origin}: " if r.origin else ""
    return (f"{where}frame folder {r.path} has {found} frames ({filename_tmpl}), fewer than the "
            f"{r.total_frames} its list line declares")  # fmt: skip


def check_missing(records: Sequence, skip: bool, source: str, filename_tmpl: str | None = None) -> list:
    """The records whose file (``VideoRecord``) or folder (``FrameRecord``) exists. Missing
    ones are an error naming the first few and their count, or with ``skip`` left out with
    one warning. With ``filename_tmpl``, a frame folder short of its declared frames is an
    error naming the folder, its list line and both counts (or skipped with ``skip``)."""
    exists = [
        os.path.isdir(r.path) if isinstance(r, FrameRecord) else os.path.isfile(r.path) for r in records
    ]
    if filename_tmpl is not None:
        for i, r in enumerate(records):
            why = _short_folder(r, filename_tmpl) if exists[i] and isinstance(r, FrameRecord) else None
            if why and not skip:
                raise BadVideoError(f"{why}; fix the list or set data.skip_bad_videos=true")
            if why:
                exists[i] = False
    missing = [r for r, ok in zip(records, exists) if not ok]
    if not missing:
        return list(records)
    kind = "frame folders" if isinstance(missing[0], FrameRecord) else "videos"
    shown = ", ".join(f"{r.path} ({r.origin})" if r.origin else r.path for r in missing[:_SHOW])
    more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
    if not skip:
        raise FileNotFoundError(f"{source}: {len(missing)} of {len(records)} {kind} missing: {shown}{more}; "
                                f"fix the paths or set data.skip_bad_videos=true to skip them")  # fmt: skip
    if len(missing) == len(records):
        raise FileNotFoundError(f"{source}: all {len(records)} {kind} are missing, e.g. {shown}")
    warnings.warn(f"{source}: skipping {len(missing)} of {len(records)} {kind}, missing "
                  f"(data.skip_bad_videos=true): {shown}{more}", stacklevel=3)  # fmt: skip
    return [r for r, ok in zip(records, exists) if ok]


# -- datasets ------------------------------------------------------------------------------
class _VideoDataset(Dataset):
    def __init__(
        self,
        records: Sequence[VideoRecord | FrameRecord],
        classes: Sequence[str],
        clip_len: int,
        frame_interval: int,
        skip_bad_videos: bool,
        filename_tmpl: str,
        source: str,
    ) -> None:
        if clip_len < 1 or frame_interval < 1:
            raise ValueError(f"clip_len and frame_interval must be >= 1, got {clip_len} and {frame_interval}")
        self.source = source or "the video list"
        self.records = check_missing(list(records), bool(skip_bad_videos), self.source, filename_tmpl)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.clip_len, self.frame_interval = int(clip_len), int(frame_interval)
        self.skip_bad_videos = bool(skip_bad_videos)
        self.filename_tmpl = filename_tmpl

    def __len__(self) -> int:
        return len(self.records)

    @property
    def targets(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def samples(self) -> list[tuple[str, int]]:
        """(path, label) pairs; assigning relabels (``ClassificationTask.align_classes``)."""
        return [(r.path, r.label) for r in self.records]

    @samples.setter
    def samples(self, pairs: Sequence[tuple[str, int]]) -> None:
        self.records = [r._replace(label=int(t)) for r, (_, t) in zip(self.records, pairs, strict=True)]

    def _frames(self, rec, indices_of) -> np.ndarray:
        """Frames ``indices_of(num_frames)`` of a record."""
        if isinstance(rec, FrameRecord):
            idx = indices_of(rec.total_frames)
            flat = read_frame_folder(rec.path, idx, rec.total_frames, self.filename_tmpl, 1, rec.origin)
        else:
            with VideoReader(rec.path) as r:
                n = r.num_frames
                idx = indices_of(n)
                flat = r.get_frames(idx)
                if r.num_frames != n:  # the header's count was wrong: sample with the true one
                    idx = indices_of(r.num_frames)
                    flat = r.get_frames(idx)
        return flat.reshape(*np.shape(idx), *flat.shape[1:])

    def _item(self, index: int, indices_of, transform):
        """``(transform(frames), label)`` of record ``index``; None for a video that fails to
        decode when ``skip_bad_videos`` (the loader's collate leaves it out)."""
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} videos")
        rec = self.records[index]
        try:
            frames = self._frames(rec, indices_of)
        except BadVideoError:
            if self.skip_bad_videos:
                return None
            raise
        return transform(frames), rec.label


class VideoTrainDataset(_VideoDataset):
    """One random clip per video: items ``(clip (3, T, crop, crop) float32, label)``.

    Args:
        records: `VideoRecord` (files) or `FrameRecord` (frame folders).
        classes: class names (label k = ``classes[k]``).
        clip_len, frame_interval: frames per clip, one every ``frame_interval``.
        transform: the clip transform (default `VideoTrainTransform`'s defaults).
        skip_bad_videos: leave missing videos out (one warning) and return ``None`` for ones
            that fail to decode, instead of raising.
        filename_tmpl: frame file names of frame folders (frame i is ``tmpl.format(i + 1)``).
        source: the list file, for messages.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord | FrameRecord],
        classes: Sequence[str],
        clip_len: int = 8,
        frame_interval: int = 8,
        transform: VideoTrainTransform | None = None,
        skip_bad_videos: bool = False,
        filename_tmpl: str = "img_{:05d}.jpg",
        source: str = "",
    ) -> None:
        super().__init__(records, classes, clip_len, frame_interval, skip_bad_videos, filename_tmpl, source)
        self.transform = transform if transform is not None else VideoTrainTransform()

    def sample(self, index: int, rng: np.random.Generator):
        """The item of ``index`` with the clip start, scale, crop and flip drawn from ``rng``."""

        def indices_of(num_frames: int) -> np.ndarray:
            return train_clip_indices(num_frames, self.clip_len, self.frame_interval, rng)

        return self._item(index, indices_of, lambda clip: self.transform(clip, rng))

    def __getitem__(self, index: int):
        seed = int(torch.randint(0, 2**62, (1,)).item())  # torch's generator: EpochSeeded seeds it
        return self.sample(index, np.random.default_rng(seed))


class VideoTestDataset(_VideoDataset):
    """``num_clips`` clips spread over each video x the transform's crops: items ``(views
    (num_clips * num_crops, 3, T, S, S) float32, label)``, clip-major. Arguments as
    `VideoTrainDataset`'s, plus ``num_clips``; ``transform`` defaults to
    `VideoTestTransform`'s defaults (3 crops of 256)."""

    def __init__(
        self,
        records: Sequence[VideoRecord | FrameRecord],
        classes: Sequence[str],
        clip_len: int = 8,
        frame_interval: int = 8,
        num_clips: int = 10,
        transform: VideoTestTransform | None = None,
        skip_bad_videos: bool = False,
        filename_tmpl: str = "img_{:05d}.jpg",
        source: str = "",
    ) -> None:
        super().__init__(records, classes, clip_len, frame_interval, skip_bad_videos, filename_tmpl, source)
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        self.num_clips = int(num_clips)
        self.transform = transform if transform is not None else VideoTestTransform()

    @property
    def num_views(self) -> int:
        return self.num_clips * self.transform.num_crops

    def clip_indices(self, num_frames: int) -> np.ndarray:
        return eval_clip_indices(num_frames, self.clip_len, self.frame_interval, self.num_clips)

    def __getitem__(self, index: int):
        return self._item(index, self.clip_indices, self.transform)  # one decode pass for all clips


# -- the factory ---------------------------------------------------------------------------
def _opt(data: Mapping[str, Any], key: str, default):
    v = data.get(key)
    return default if v is None else v


def _path(root: str, p: str) -> str:
    return p if os.path.isabs(p) else os.path.join(root, p)


def _list_classes(data, root: str, lists: Sequence[str], parse, classes):
    """(classes, their source, num_classes) for a list format."""
    if classes is not None:
        return list(classes), "the given class list", None
    cf = data.get("classes_file")
    path = _path(root, cf) if cf else os.path.join(root, "classes.txt")
    if cf or os.path.isfile(path):
        return read_classes_file(path), path, None
    if data.get("num_classes") is not None:
        return None, "data.num_classes", int(data["num_classes"])
    # no names anywhere: as many classes as the largest label of the lists needs
    top = max(max(r.label for r in parse(p)[0]) for p in lists if os.path.isfile(p))
    return None, "the lists' largest label", top + 1


def _split_dir(data, root: str, split: str, auto: Sequence[str]) -> str:
    prefix = data.get(f"{split}_prefix")
    if prefix:
        return _path(root, prefix)
    return next((os.path.join(root, a) for a in auto if os.path.isdir(os.path.join(root, a))), root)


def build_video_dataset(
    data: Mapping[str, Any],
    split: str,
    *,
    train: bool,
    views: tuple[int, int] | None = None,
    classes: list[str] | None = None,
) -> Dataset:
    """The video dataset of ``split`` ("train" | "val"): a `VideoTrainDataset` when
    ``train``, else a `VideoTestDataset`; ``.classes`` lists the class names.

    ``views = (clips, crops)`` overrides ``num_clips`` / ``num_crops``; ``classes`` gives the
    class names (e.g. the train set's to a val set) instead of finding them.

    Keys of ``data`` (None or absent: the default):

    - ``dataset``: ``video_list`` | ``video_folder`` | ``kinetics`` | ``rawframes`` |
      ``synthetic_video`` (generated into ``root``, then read as a ``video_list``).
    - ``root``: the dataset folder (required).
    - ``train_list`` / ``val_list``: the split's list file (``video_list``, ``rawframes``;
      default ``train.txt`` / ``val.txt``), CSV (``kinetics``; ``train.csv`` /
      ``validate.csv``, else ``val.csv``) or folder (``video_folder``; ``train`` / ``val``);
      relative to ``root`` unless absolute.
    - ``train_prefix`` / ``val_prefix``: the folder (relative to ``root``) that the split's
      listed paths are relative to; default ``root``, for ``kinetics`` ``root/train`` /
      ``root/val`` (or ``root/validate``) where that folder exists.
    - ``classes_file``: class names, one a line (``video_list``, ``rawframes``; default
      ``root/classes.txt`` when present); ``num_classes``: the class count without names.
    - ``filename_tmpl``: frame file names of ``rawframes`` (``img_{:05d}.jpg``).
    - ``clip_len`` (8), ``frame_interval`` (8): frames per clip, one every N-th.
    - ``train_scale`` ([256, 320]), ``crop_size`` (224): training short-side range and crop.
    - ``test_scale`` (256): test short side and crop side; ``num_clips`` (10), ``num_crops``
      (3; 1 = centre crop): test views.
    - ``skip_bad_videos`` (False): skip missing / undecodable videos (see the module docstring).
    - ``mean``, ``std``: normalisation in 0-1 space (ImageNet's).
    - ``synthetic_video`` only: ``seed`` (0), ``train_size`` (240), ``val_size`` (60),
      ``image_size`` (64), ``num_frames`` (16); sample it with ``clip_len`` 8 x
      ``frame_interval`` 2 (the cue is in frames 0-3, the target in 12-15) and scales near
      ``image_size``.
    """
    name, root = _video_source(data, split)
    if name in ("video_list", "rawframes"):
        records, names, source = _listed_videos(data, name, root, split, classes)
    elif name == "video_folder":
        records, names, source = _folder_videos(data, root, split, classes)
    else:  # kinetics
        records, names, source = _kinetics_videos(data, root, split, classes)
    return _video_dataset(data, records, names, source, train, views)


def _video_source(data: Mapping[str, Any], split: str) -> tuple[str, str]:
    """(the dataset's format, its root) once checked; ``synthetic_video`` is generated into
    ``root`` here and read as a ``video_list``."""
    name = data.get("dataset")
    if name not in VIDEO_DATASETS:
        raise ValueError(
            f"data.dataset={name!r} is not a video dataset; choose one of {', '.join(VIDEO_DATASETS)}"
        )
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = data.get("root")
    if not root:
        raise ValueError(f"data.root is required for data.dataset={name}")
    root = str(root)
    if name == "synthetic_video":
        from .synthetic_video import generate_synthetic_videos

        generate_synthetic_videos(
            root,
            seed=int(_opt(data, "seed", 0)),
            train_size=int(_opt(data, "train_size", 240)),
            val_size=int(_opt(data, "val_size", 60)),
            image_size=int(_opt(data, "image_size", 64)),
            num_frames=int(_opt(data, "num_frames", 16)),
        )
        return "video_list", root
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data.root={root}: folder not found (data.dataset={name})")
    return name, root


def _listed_videos(data: Mapping[str, Any], name: str, root: str, split: str, classes: list[str] | None):
    """(records, class names, list file) of a ``video_list`` / ``rawframes`` split; the class
    names come from ``classes``, the classes file, or the labels of both lists."""
    default = {"train": "train.txt", "val": "val.txt"}
    lists = {s: _path(root, _opt(data, f"{s}_list", default[s])) for s in ("train", "val")}
    parse = parse_video_list if name == "video_list" else parse_rawframe_list
    if not os.path.isfile(lists[split]):
        raise FileNotFoundError(f"data.{split}_list: {name} list not found: {lists[split]}")
    names, src, num = _list_classes(data, root, [lists[split], lists[_other(split)]], parse, classes)
    records, names = parse(lists[split], _split_dir(data, root, split, ()), names, num, src)
    return records, names, lists[split]


def _folder_videos(data: Mapping[str, Any], root: str, split: str, classes: list[str] | None):
    """(records, class names, folder) of a ``video_folder`` split; a val split takes the
    train folder's classes when there is one."""
    folder = _path(root, _opt(data, f"{split}_list", split))
    if classes is None and split != "train":
        tr = _path(root, _opt(data, "train_list", "train"))
        if os.path.isdir(tr) and os.path.abspath(tr) != os.path.abspath(folder):
            classes = scan_video_folder(tr)[1]
    records, names = scan_video_folder(folder, classes)
    return records, names, folder


def _kinetics_videos(data: Mapping[str, Any], root: str, split: str, classes: list[str] | None):
    """(records, class names, CSV) of a ``kinetics`` split; a val split takes the train
    CSV's classes when there is one."""
    defaults = {"train": ("train.csv",), "val": ("validate.csv", "val.csv")}

    def csv_of(s: str) -> str:
        given = data.get(f"{s}_list")
        if given:
            return _path(root, given)
        cands = [_path(root, c) for c in defaults[s]]
        return next((c for c in cands if os.path.isfile(c)), cands[0])

    path = csv_of(split)
    if classes is None and split != "train" and os.path.isfile(csv_of("train")):
        classes = kinetics_classes(csv_of("train"))
    auto = ("train",) if split == "train" else ("val", "validate")
    records, names = parse_kinetics_csv(path, _split_dir(data, root, split, auto), classes)
    return records, names, path


def _video_dataset(
    data: Mapping[str, Any],
    records: list,
    names: list[str],
    source: str,
    train: bool,
    views: tuple[int, int] | None,
) -> Dataset:
    """The training dataset of ``records`` (random clips and crops), or the test one (the
    ``views``, else ``num_clips`` x ``num_crops``, of every video)."""
    skip = bool(_opt(data, "skip_bad_videos", False))
    tmpl = str(_opt(data, "filename_tmpl", "img_{:05d}.jpg"))
    clip_len, interval = int(_opt(data, "clip_len", 8)), int(_opt(data, "frame_interval", 8))
    mean, std = _opt(data, "mean", IMAGENET_MEAN), _opt(data, "std", IMAGENET_STD)
    if train:
        tf = VideoTrainTransform(_opt(data, "train_scale", (256, 320)), int(_opt(data, "crop_size", 224)),
                                 True, mean, std)  # fmt: skip
        return VideoTrainDataset(records, names, clip_len, interval, tf, skip, tmpl, source)
    clips, crops = (
        views if views is not None else (int(_opt(data, "num_clips", 10)), int(_opt(data, "num_crops", 3)))
    )
    tf = VideoTestTransform(int(_opt(data, "test_scale", 256)), int(crops), None, mean, std)
    return VideoTestDataset(records, names, clip_len, interval, int(clips), tf, skip, tmpl, source)


def _other(split: str) -> str:
    return "val" if split == "train" else "train"


def load_video_views(
    path: str, data: Mapping[str, Any], views: tuple[int, int] | None = None
) -> torch.Tensor:
    """The test views ``(clips * crops, 3, T, S, S)`` float32 of one video file (or raw-frame
    folder, frames ``data.filename_tmpl``), sampled and transformed as
    `build_video_dataset`'s test set does (``views`` = (clips, crops))."""
    clips, crops = (
        views if views is not None else (int(_opt(data, "num_clips", 10)), int(_opt(data, "num_crops", 3)))
    )
    if os.path.isdir(path):
        tmpl = str(_opt(data, "filename_tmpl", "img_{:05d}.jpg"))
        n = 0
        while os.path.isfile(os.path.join(path, tmpl.format(n + 1))):
            n += 1
        if n == 0:
            raise BadVideoError(f"frame folder {path} holds no {tmpl} frames")
        rec: VideoRecord | FrameRecord = FrameRecord(path, n, 0)
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"video not found: {path}")
        rec = VideoRecord(path, 0)
    tf = VideoTestTransform(int(_opt(data, "test_scale", 256)), int(crops), None,
                            _opt(data, "mean", IMAGENET_MEAN), _opt(data, "std", IMAGENET_STD))  # fmt: skip
    tmpl = str(_opt(data, "filename_tmpl", "img_{:05d}.jpg"))
    clip_len, interval = int(_opt(data, "clip_len", 8)), int(_opt(data, "frame_interval", 8))
    ds = VideoTestDataset([rec], ["?"], clip_len, interval, int(clips), tf, False, tmpl, path)
    return ds[0][0]
