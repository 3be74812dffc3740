"""Clip sampling positions and clip transforms against hand computations."""

import numpy as np
import pytest
import torch

from gcnet.data.video_transforms import (
    VideoTestTransform,
    VideoTrainTransform,
    eval_clip_indices,
    short_side_size,
    train_clip_indices,
)

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def test_train_clip_start_is_uniform_over_every_fitting_start():
    rng = np.random.default_rng(0)
    starts = []
    for _ in range(2000):
        idx = train_clip_indices(100, 8, 8, rng)
        assert np.array_equal(idx - idx[0], np.arange(8) * 8)  # one frame every 8th
        starts.append(int(idx[0]))
    # a clip spans (8 - 1) * 8 + 1 = 57 frames: starts 0 .. 100 - 57 = 43
    assert min(starts) == 0 and max(starts) == 43
    counts = np.bincount(starts, minlength=44)
    assert counts.min() > 15 and counts.max() < 85  # about 2000 / 44 = 45 each


def test_train_clip_of_a_short_video_loops():
    # 30 frames < 57: start 0, indices modulo 30
    assert train_clip_indices(30, 8, 8, np.random.default_rng(1)).tolist() == [0, 8, 16, 24, 2, 10, 18, 26]
    assert train_clip_indices(57, 8, 8, np.random.default_rng(1)).tolist() == list(range(0, 57, 8))


def test_eval_clips_hand_computed():
    # mmaction2 SampleFrames(test_mode=True): max_offset = 100 - 57 = 43; starts round(k * 43 / 9)
    got = eval_clip_indices(100, 8, 8, 10)
    assert got.shape == (10, 8)
    assert got[:, 0].tolist() == [0, 5, 10, 14, 19, 24, 29, 33, 38, 43]
    assert np.array_equal(got - got[:, :1], np.tile(np.arange(8) * 8, (10, 1)))
    assert got.max() == 99  # the last clip ends on the last frame
    assert eval_clip_indices(100, 8, 8, 1)[:, 0].tolist() == [21]  # 43 // 2
    short = eval_clip_indices(30, 8, 8, 10)  # too short: every clip at 0, looping
    assert (short == [0, 8, 16, 24, 2, 10, 18, 26]).all()


def _clip(t=4, h=40, w=60, seed=0):
    """A random texture, the same in every frame except a per-frame brightness offset."""
    base = np.random.default_rng(seed).integers(0, 200, size=(h, w, 3))
    return np.stack([base + 10 * i for i in range(t)]).astype(np.uint8)


def test_train_transform_shape_same_crop_for_all_frames():
    clip = _clip()
    tf = VideoTrainTransform(scale=(40, 48), crop_size=32, mean=ZERO, std=ONE)
    out = tf(clip, np.random.default_rng(3))
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32
    for i in range(1, 4):  # frames differ by exactly their offset: the same crop, scale, flip
        assert torch.allclose(out[:, i] - out[:, 0], torch.full_like(out[:, 0], 10 * i / 255), atol=2e-3)


def test_train_transform_by_hand():
    """Scale, crop and flip drawn by params() reproduce the output with a plain resize."""
    from torchvision.transforms.v2 import functional as TF

    clip = _clip(t=2)
    tf = VideoTrainTransform(scale=(40, 48), crop_size=32, mean=ZERO, std=ONE)
    flips = set()
    for seed in range(8):
        size, y, x, flip = tf.params(40, 60, np.random.default_rng(seed))
        flips.add(flip)
        assert 40 <= size <= 48
        h, w = size, int(np.floor(60 / 40 * size))  # the short side 40 -> size
        assert short_side_size(40, 60, size) == (h, w) and 0 <= y <= h - 32 and 0 <= x <= w - 32
        want = TF.resize(torch.from_numpy(clip).permute(0, 3, 1, 2), [h, w], antialias=True)
        want = want[..., y : y + 32, x : x + 32]
        if flip:
            want = want.flip(-1)
        got = tf(clip, np.random.default_rng(seed))
        assert torch.equal(got, want.permute(1, 0, 2, 3).float() / 255)
    assert flips == {True, False}


def test_flip_flips():
    ramp = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 4, (32, 1, 3))[None].repeat(2, 0)
    tf = VideoTrainTransform(scale=(32, 32), crop_size=32, mean=ZERO, std=ONE)
    outs = {}
    for seed in range(10):
        out = tf(ramp, np.random.default_rng(seed))
        outs[tf.params(32, 32, np.random.default_rng(seed))[3]] = out
    plain, flipped = outs[False], outs[True]
    assert torch.equal(plain[0, 0, 0], torch.arange(32) * 4 / 255.0)
    assert torch.equal(flipped, plain.flip(-1))


def test_normalisation_hand_computed():
    clip = np.full((3, 16, 16, 3), (51, 102, 204), np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    tf = VideoTrainTransform(scale=(16, 20), crop_size=16, mean=mean, std=std)
    out = tf(clip, np.random.default_rng(0))
    want = [(v / 255 - m) / s for v, m, s in zip((51, 102, 204), mean, std)]
    for c in range(3):
        assert torch.allclose(out[c], torch.full_like(out[c], want[c]), atol=1e-5)


@pytest.mark.parametrize("h, w", [(32, 64), (64, 32)])
def test_three_test_crops_along_the_long_side(h, w):
    """No resize (short side == scale): crops at 0, centre, end of the long side."""
    yy, xx = np.mgrid[:h, :w]
    frame = np.stack([xx * 3, yy * 3, np.zeros_like(xx)], -1).astype(np.uint8)
    clips = np.stack([frame, frame])[None]  # (N=1, T=2, H, W, 3)
    out = VideoTestTransform(scale=32, num_crops=3, mean=ZERO, std=ONE)(clips)
    assert out.shape == (3, 3, 2, 32, 32)
    starts = [int(round(float(v[0 if w > h else 1, 0, 0, 0]) * 255 / 3)) for v in out]
    assert starts == [0, 16, 32]  # (64 - 32) / 2 = 16; the end: 64 - 32
    centre = VideoTestTransform(scale=32, num_crops=1, mean=ZERO, std=ONE)(clips)
    assert centre.shape == (1, 3, 2, 32, 32) and torch.equal(centre[0], out[1])


def test_test_transform_scales_the_short_side():
    clips = np.zeros((2, 3, 48, 80, 3), np.uint8)  # 2 clips, short side 48 -> 24: 24 x 40
    out = VideoTestTransform(scale=24, num_crops=3)(clips)
    assert out.shape == (6, 3, 3, 24, 24)


def test_bad_transform_settings():
    with pytest.raises(ValueError, match=r"crop_size=240 must be >= 1 and <= the smallest train_scale 224"):
        VideoTrainTransform(scale=(224, 256), crop_size=240)
    with pytest.raises(ValueError, match=r"train_scale must be \[low, high\]"):
        VideoTrainTransform(scale=(320, 256))
    with pytest.raises(ValueError, match="num_crops must be 1 .centre. or 3"):
        VideoTestTransform(num_crops=2)
