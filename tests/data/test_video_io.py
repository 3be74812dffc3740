"""Decoding (gcnet.data.video_io) against what was encoded: clips read by seeking, looping
short videos, missing / wrong frame counts, every unreadable case with its message."""

import os
import wave

import av
import numpy as np
import pytest

from gcnet.data.video_io import (
    BadVideoError,
    VideoReader,
    read_frame_folder,
    read_video_frames,
    video_num_frames,
)

from .video_helpers import coded_frames, frame_index, write_coded, write_frame_folder


def _keyframes(path) -> list[int]:
    with av.open(str(path)) as c:
        return [i for i, f in enumerate(c.decode(c.streams.video[0])) if f.key_frame]


def test_decoded_frames_equal_the_encoded_ones(tmp_path):
    p = write_coded(tmp_path / "a.mp4", 40)
    enc = coded_frames(40).astype(np.int16)
    dec = read_video_frames(p, range(40))
    assert dec.dtype == np.uint8 and dec.shape == (40, 32, 40, 3)
    assert [frame_index(f) for f in dec] == list(range(40))
    inner = (slice(None), slice(10, 24), slice(12, 30))  # away from the mark's edges (chroma blur)
    assert np.abs(dec[inner].astype(np.int16) - enc[inner]).max() <= 3


def test_mid_video_clip_decodes_from_the_keyframe_before_it(tmp_path):
    p = write_coded(tmp_path / "a.mp4", 40, gop_size=12)
    keys = _keyframes(p)
    assert len(keys) < 40  # there are inter frames: seeking matters
    want = [17, 19, 21, 23]
    key = max(k for k in keys if k <= want[0])
    with VideoReader(p) as r:
        assert r.num_frames == r.metadata_frames == 40 and float(r.fps) == 25
        clip = r.get_frames(want)
        # decoded from the keyframe before frame 17 up to frame 23 only
        assert r.frames_decoded == want[-1] - key + 1 < 40
        assert [frame_index(f) for f in clip] == want
        r.frames_decoded = 0
        clip = r.get_frames([33, 36, 39])  # the end of the video
        assert [frame_index(f) for f in clip] == [33, 36, 39]
        assert r.frames_decoded == 39 - max(k for k in keys if k <= 33) + 1


def test_short_video_loops(tmp_path):
    p = write_coded(tmp_path / "short.mp4", 20)
    idx = np.arange(0, 64, 8)  # an 8 x 8 clip over a 20-frame video
    clip = read_video_frames(p, idx)
    assert [frame_index(f) for f in clip] == [0, 8, 16, 4, 12, 0, 8, 16]
    # order of the request is kept, repeats allowed
    assert [frame_index(f) for f in read_video_frames(p, [19, 3, 3, 45])] == [19, 3, 3, 5]


def test_frame_count_missing_from_metadata_is_counted(tmp_path):
    p = write_coded(tmp_path / "a.mkv", 30)  # Matroska declares no frame count
    with VideoReader(p) as r:
        assert r.metadata_frames == 0
        assert r.num_frames == 30
        assert [frame_index(f) for f in r.get_frames([25, 29, 31])] == [25, 29, 1]
    assert video_num_frames(p) == 30


def test_header_promising_more_frames_than_the_file_holds(tmp_path):
    full = write_coded(tmp_path / "full.mp4", 40, options={"movflags": "faststart"})
    data = open(full, "rb").read()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: len(data) // 2])  # index up front, half the frames' data gone
    with av.open(str(p)) as c:
        real = sum(1 for _ in c.decode(c.streams.video[0]))
    assert 3 < real < 40
    with VideoReader(str(p)) as r:
        assert r.metadata_frames == 40  # the header is wrong
        clip = r.get_frames([2, 30, real + 1])
        assert r.num_frames == real  # corrected from the frames that decode
    got = [frame_index(f) for f in clip]
    assert got[0] == 2 and got[2] == 1 and got[1] == 30 % real
    assert video_num_frames(str(p)) == real  # the learnt count is cached for the file


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "not found"),
        ("empty", "the file is empty"),
        ("text", "cannot open video {p}: corrupt, truncated, or not a video (InvalidDataError"),
        ("truncated", "cannot open video {p}: corrupt, truncated, or not a video ("),
        ("garbage_header", "corrupt or truncated"),
        ("audio_only", "has no video stream (streams: audio (pcm_s16le))"),
        ("folder", "is a folder, not a video file"),
    ],
)
def test_unreadable_videos_name_the_file_and_the_problem(tmp_path, case, expect):
    p = tmp_path / f"{case}.mp4"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("label,youtube_id\nnot a video\n")
    elif case in ("truncated", "garbage_header"):
        data = open(write_coded(tmp_path / "ok.mp4", 40), "rb").read()  # index at the end
        if case == "truncated":
            data = data[: len(data) * 2 // 3]  # an interrupted download: the index is lost
        else:
            data = bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8)) + data[64:]
        p.write_bytes(data)
    elif case == "audio_only":
        with wave.open(str(tmp_path / "a.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0\0" * 800)
        os.replace(tmp_path / "a.wav", p)
    elif case == "folder":
        p.mkdir()
    with pytest.raises(BadVideoError) as e:
        read_video_frames(str(p), [0, 1])
    msg = str(e.value)
    assert str(p) in msg and expect.format(p=p) in msg and "\n" not in msg
    assert isinstance(e.value, ValueError)


def test_frame_folder_reads_the_listed_frames(tmp_path):
    frames = coded_frames(12)
    d = write_frame_folder(tmp_path / "v1", frames, "img_{:05d}.png")
    got = read_frame_folder(d, [0, 5, 11, 13], 12, "img_{:05d}.png")
    assert np.array_equal(got, frames[[0, 5, 11, 1]])  # PNG: exact; 13 loops to 1


def test_frame_folder_short_of_frames(tmp_path):
    d = write_frame_folder(tmp_path / "v1", coded_frames(9), "img_{:05d}.png")
    with pytest.raises(BadVideoError) as e:
        read_frame_folder(d, [0, 1], 12, "img_{:05d}.png", origin="val_list.txt:3")
    msg = str(e.value)
    assert msg.startswith("val_list.txt:3: frame folder ") and d in msg
    assert "has 9 frames" in msg and "the 12 its list line declares" in msg
    (tmp_path / "v1" / "img_00004.png").write_bytes(b"not a png")
    with pytest.raises(BadVideoError, match=r"cannot read frame .*img_00004.png: not an image"):
        read_frame_folder(d, [3], 9, "img_{:05d}.png")
