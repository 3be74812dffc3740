"""Reading clips: video files with PyAV, raw-frame folders with PIL.

Only the frames a clip needs are decoded: the reader seeks to the nearest keyframe at or
before the first wanted frame and decodes forward until the last wanted one. A frame's index
is its presentation time in frames, ``round((pts - start_time) * time_base * average_rate)``,
and frame ``i`` is sought at ``pts = start_time + i / (average_rate * time_base)``.

The frame count comes from the container's metadata (``stream.frames``). Where that is
missing (Matroska / WebM, raw streams) the video packets are counted by demuxing the file
once, without decoding (cached per file). Where it is wrong -- a header that promises more
frames than the file holds, as in a truncated download with the index at the front -- the
decoder reaches the end early; the frames actually decoded are then the count (cached), and
the clip's indices are taken modulo it and read again. A header that promises fewer frames
than there are only leaves the tail unused. Frames whose timestamps cannot be read (``pts``
missing) are counted in decoding order from the start of the file instead.

Indices are taken modulo the frame count, so a video shorter than a clip loops.

A missing file, one FFmpeg cannot open (corrupt, truncated with its index lost, not a
video), one without a video stream, or one whose data fails to decode is a
`BadVideoError` with one line naming the file and what was wrong.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from PIL import Image, UnidentifiedImageError

from gcnet.utils.extras import require

from .datasets import to_rgb

__all__ = [
    "BadVideoError",
    "VideoReader",
    "count_frame_files",
    "read_frame_folder",
    "read_video_frames",
    "video_num_frames",
    "write_video",
]


class BadVideoError(ValueError):
    """A video (file or frame folder) that cannot be read."""


def _av(feature: str = "video decoding"):
    # deferred: importing gcnet must not need PyAV (the [video] extra) nor FFmpeg's libraries
    return require("av", feature)


#: frame counts learnt by counting or by running into the end: (path, size, mtime) -> count
_COUNT_CACHE: OrderedDict[tuple[str, int, int], int] = OrderedDict()
_CACHE_SIZE = 65536


def _cache_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


def _remember(path: str, n: int) -> None:
    key = _cache_key(path)
    _COUNT_CACHE[key] = n
    _COUNT_CACHE.move_to_end(key)
    while len(_COUNT_CACHE) > _CACHE_SIZE:
        _COUNT_CACHE.popitem(last=False)


def _describe(e: Exception) -> str:
    msg = str(e)
    av = _av()
    if isinstance(e, av.error.FFmpegError) and getattr(e, "strerror", None):
        msg = e.strerror  # without the errno and the repeated file name
    return f"{type(e).__name__}: {msg}"


def _stream_kind(stream) -> str:
    cc = getattr(stream, "codec_context", None)
    return f"{stream.type} ({cc.name})" if cc is not None and cc.name else str(stream.type)


class VideoReader:
    """One open video file: its frame count, size, and random access to frames.

    Args:
        path: a video file FFmpeg can read (mp4, mkv, webm, avi, ...).

    ``frames_decoded`` counts the frames decoded so far (decoding only what clips need is
    tested with it). Use as a context manager, or call `close`.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.frames_decoded = 0
        if not os.path.isfile(self.path):
            what = "is a folder, not a video file" if os.path.isdir(self.path) else "not found"
            raise BadVideoError(f"video {self.path}: {what}")
        if os.path.getsize(self.path) == 0:
            raise BadVideoError(f"cannot read video {self.path}: the file is empty (0 bytes)")
        av = _av()
        try:
            self._container = av.open(self.path, metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise BadVideoError(
                f"cannot open video {self.path}: corrupt, truncated, or not a video ({_describe(e)})"
            ) from None
        fmt = self._container.format.name or ""
        if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg's readers of single images
            self._container.close()
            kind = fmt.removesuffix("_pipe").upper() if fmt != "image2" else "picture"
            raise BadVideoError(f"{self.path} is an image ({kind}), not a video: this model takes video "
                                "files (.mp4, .mkv, .avi, ...); use an image model for images")  # fmt: skip
        if not self._container.streams.video:
            kinds = [_stream_kind(s) for s in self._container.streams] or ["none"]
            self._container.close()
            raise BadVideoError(f"video {self.path} has no video stream (streams: {', '.join(kinds)})")
        s = self._container.streams.video[0]
        self._stream = s
        rate = s.average_rate or s.guessed_rate or s.base_rate
        if not rate:
            self._container.close()
            raise BadVideoError(f"video {self.path}: the video stream has no frame rate")
        self.fps = Fraction(rate)
        self._time_base = Fraction(s.time_base) if s.time_base else None
        self._start = s.start_time or 0
        self._frames_per_tick = float(self._time_base * self.fps) if self._time_base else 0.0
        self.height, self.width = s.codec_context.height, s.codec_context.width
        self._num_frames: int | None = None

    # -- context manager ------------------------------------------------------------
    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- frame count ----------------------------------------------------------------
    @property
    def metadata_frames(self) -> int:
        """The frame count the container declares (0: not declared)."""
        return int(self._stream.frames or 0)

    @property
    def num_frames(self) -> int:
        """The frame count: a learnt one (cached), else the metadata's, else counted packets."""
        if self._num_frames is None:
            cached = _COUNT_CACHE.get(_cache_key(self.path))
            if cached is not None:
                self._num_frames = cached
            elif self.metadata_frames > 0:
                self._num_frames = self.metadata_frames
            else:
                self._num_frames = self.count_packets()
                _remember(self.path, self._num_frames)
        return self._num_frames

    def count_packets(self) -> int:
        """The number of video packets, by demuxing the whole file (no decoding)."""
        av = _av()
        n = 0
        try:
            self._container.seek(0)
            for packet in self._container.demux(self._stream):
                if packet.size > 0:  # the demuxer's final flush packet is empty
                    n += 1
        except av.error.FFmpegError as e:
            raise BadVideoError(
                f"cannot read video {self.path}: corrupt or truncated, demuxing failed ({_describe(e)})"
            ) from None
        if n == 0:
            raise BadVideoError(f"video {self.path}: the video stream holds no frames")
        return n

    # -- decoding -------------------------------------------------------------------
    def _index(self, frame) -> int | None:
        if frame.pts is None or self._time_base is None:
            return None
        return int(round((frame.pts - self._start) * self._frames_per_tick))

    def _pts(self, index: int) -> int:
        return self._start + int(Fraction(index) / (self.fps * self._time_base))

    def _decode(self, wanted: list[int], seek: bool) -> tuple[dict[int, np.ndarray], int | None]:
        """Frames for the sorted unique ``wanted`` indices, decoding from the keyframe before
        the first (``seek``) or from the start counting frames in order. Returns the frames
        found and, where the stream ended before the last wanted frame, the frames seen."""
        av = _av()
        out: dict[int, np.ndarray] = {}
        j, prev, prev_idx, seen = 0, None, -1, 0
        first = wanted[0]
        try:
            if seek and first > 0:
                self._container.seek(self._pts(first), stream=self._stream, backward=True, any_frame=False)
            else:
                self._container.seek(0)
            for frame in self._container.decode(self._stream):
                self.frames_decoded += 1
                idx = self._index(frame) if seek else seen
                seen += 1
                if idx is None:
                    raise _NoTimestamps
                if prev is None and idx > first and seek:
                    raise _Overshot  # the seek landed past the first wanted frame
                while j < len(wanted) and wanted[j] <= idx:
                    # a timestamp gap (variable frame rate): the frame shown at that time
                    src = frame if wanted[j] == idx or prev is None else prev
                    out[wanted[j]] = src.to_ndarray(format="rgb24")
                    j += 1
                if j == len(wanted):
                    return out, None
                prev, prev_idx = frame, idx
        except (_NoTimestamps, _Overshot):
            raise
        except av.error.FFmpegError as e:
            where = f"after frame {prev_idx}" if prev_idx >= 0 else "at its first frame"
            raise BadVideoError(
                f"cannot decode video {self.path} {where}: corrupt or truncated data ({_describe(e)})"
            ) from None
        return out, prev_idx + 1

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 ``(len(indices), H, W, 3)`` RGB frames; indices are taken modulo the frame
        count (short videos loop). A count found wrong is corrected and the read retried."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("get_frames: no frame indices given")
        for _ in range(3):
            n = self.num_frames
            mod = np.mod(idx, n)
            wanted = sorted(set(mod.tolist()))
            try:
                found, ended = self._decode(wanted, seek=True)
            except (_NoTimestamps, _Overshot):
                found, ended = self._decode(wanted, seek=False)
            if ended is None:
                return np.stack([found[i] for i in mod.tolist()])
            if ended == 0 and not found:
                if wanted[0] == 0:
                    raise BadVideoError(f"cannot decode video {self.path}: no frame could be decoded")
                # the seek target lies past the end: count from the start
                ended = self._count_decodable()
            # fewer frames than the count said: the frames seen are the count
            if ended >= n:  # (cannot happen: guard against looping forever)
                break
            self._num_frames = ended
            _remember(self.path, ended)
        raise BadVideoError(f"cannot decode video {self.path}: its frame count keeps changing while reading")

    def _count_decodable(self) -> int:
        av = _av()
        n = 0
        try:
            self._container.seek(0)
            for _ in self._container.decode(self._stream):
                self.frames_decoded += 1
                n += 1
        except av.error.FFmpegError as e:
            why = f"corrupt or truncated data ({_describe(e)})"
            raise BadVideoError(f"cannot decode video {self.path} after frame {n - 1}: {why}") from None
        if n == 0:
            raise BadVideoError(f"cannot decode video {self.path}: no frame could be decoded")
        return n


class _NoTimestamps(Exception):
    pass


class _Overshot(Exception):
    pass


def video_num_frames(path: str) -> int:
    """The frame count of a video file (see the module docstring for how it is found)."""
    with VideoReader(path) as r:
        return r.num_frames


def read_video_frames(path: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` RGB frames ``indices`` (modulo the frame count) of a video file."""
    with VideoReader(path) as r:
        return r.get_frames(indices)


# -- raw-frame folders ----------------------------------------------------------------
def count_frame_files(folder: str, filename_tmpl: str, declared: int, start_index: int = 1) -> int:
    """How many of the ``declared`` frame files ``filename_tmpl.format(start_index + i)`` exist."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return 0
    return sum(filename_tmpl.format(start_index + i) in names for i in range(declared))


def read_frame_folder(
    folder: str,
    indices: Sequence[int] | np.ndarray,
    total_frames: int,
    filename_tmpl: str = "img_{:05d}.jpg",
    start_index: int = 1,
    origin: str = "",
) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` RGB frames of a raw-frame folder: frame ``i`` (0-based, taken
    modulo ``total_frames``) is the file ``filename_tmpl.format(start_index + i)``.

    A folder holding fewer frames than ``total_frames`` (its list line, ``origin``, says) is a
    `BadVideoError` naming the folder, the line and both counts; so is an unreadable
    frame file."""
    where = f"{origin}: " if origin else ""
    if not os.path.isdir(folder):
        raise BadVideoError(f"{where}frame folder not found: {folder}")
    last = os.path.join(folder, filename_tmpl.format(start_index + total_frames - 1))
    idx = np.mod(np.asarray(indices, dtype=np.int64).reshape(-1), total_frames)
    if not os.path.isfile(last) or not all(
        os.path.isfile(os.path.join(folder, filename_tmpl.format(start_index + i))) for i in set(idx.tolist())
    ):
        found = count_frame_files(folder, filename_tmpl, total_frames, start_index)
        raise BadVideoError(
            f"{where}frame folder {folder} has {found} frames ({filename_tmpl}), "
            f"fewer than the {total_frames} its list line declares"
        )
    frames: dict[int, np.ndarray] = {}
    for i in sorted(set(idx.tolist())):
        path = os.path.join(folder, filename_tmpl.format(start_index + i))
        try:
            with open(path, "rb") as f:
                img = Image.open(f)
                img.load()
                frames[i] = np.asarray(to_rgb(img))
        except UnidentifiedImageError:
            raise BadVideoError(
                f"{where}cannot read frame {path}: not an image file PIL can decode"
            ) from None
        except (OSError, SyntaxError, ValueError) as e:
            raise BadVideoError(f"{where}cannot read frame {path}: {type(e).__name__}: {e}") from None
    shapes = {a.shape for a in frames.values()}
    if len(shapes) > 1:
        raise BadVideoError(f"{where}frames of {folder} differ in size: {sorted(shapes)}")
    return np.stack([frames[i] for i in idx.tolist()])


# -- writing (test data, the synthetic set, benchmarks) ---------------------------------
def write_video(
    path: str,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: int = 25,
    codec: str = "mpeg4",
    bit_rate: int = 2_000_000,
    gop_size: int = 12,
    quality: tuple[int, int] | None = (1, 2),
    options: dict[str, str] | None = None,
) -> str:
    """Encode uint8 ``(T, H, W, 3)`` RGB frames (even H and W) to ``path`` with PyAV.

    ``quality`` bounds the quantiser (qmin, qmax; 1-2 is near lossless for flat colours);
    ``gop_size``: frames between keyframes; ``options``: container (muxer) options, e.g.
    ``{"movflags": "faststart"}``. Returns ``path``."""
    av = _av("writing videos")
    frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError(f"write_video {path}: no frames")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"write_video {path}: frame size {w}x{h} must be even for yuv420p")
    with av.open(path, "w", options=options or {}) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.bit_rate = bit_rate
        s.codec_context.gop_size = gop_size
        s.thread_count = 1  # deterministic output
        if quality is not None:
            s.codec_context.options = {"qmin": str(quality[0]), "qmax": str(quality[1])}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
