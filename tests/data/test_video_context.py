"""The video demo's construction against its plain network: relating the cue (first frames) to
the disc (last frames) is out of a plain slow-only network's reach, by construction.

- the temporal receptive field of ``slowonly_tiny``, computed structurally (all-positive
  weights: an output is non-zero exactly where the input region reaches it) and checked
  against gradients with random weights, is 5 frames;
- on the demo's clips no position of the map before the pooling is reached by both the cue's
  pixels and the disc's;
- so the plain network's logits are additive, f(cue) + g(disc): the interaction contrast
  L(white, a) - L(black, a) - L(white, a+2) + L(black, a+2) is 0 (float64 rounding) on
  painted clips, while a GC network's is not; the rule is an XOR on those four pairs, which
  an additive score cannot get all right (at most 75%);
- a hand-written oracle with global information gets every validation video right.
"""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from gcnet import create_model
from gcnet.data.synthetic_video import (
    blind_oracle_label,
    generate_synthetic_videos,
    oracle_label,
    paint_video,
    video_layout,
)
from gcnet.data.video import parse_video_list
from gcnet.data.video_io import read_video_frames
from gcnet.data.video_transforms import eval_clip_indices, train_clip_indices

T, S = 8, 32  # the demo's clips: 8 frames (8x2 sampling of 16) of 32 x 32


@torch.no_grad()
def positive_copy(model: nn.Module) -> nn.Module:
    """The model with every conv / linear an average over its inputs (no bias) and every norm
    the identity, in float64: on a non-negative input every activation is a non-negative sum
    over the input taps that reach it, so an output is non-zero exactly when the input's
    support lies in its theoretical receptive field."""
    m = copy.deepcopy(model).double().eval()
    for mod in m.modules():
        if isinstance(mod, (nn.Conv3d, nn.Linear)):
            mod.weight.fill_(1.0 / mod.weight[0].numel())
            if mod.bias is not None:
                mod.bias.zero_()
        elif isinstance(mod, nn.BatchNorm3d):
            mod.weight.fill_(1.0), mod.bias.zero_(), mod.running_mean.zero_(), mod.running_var.fill_(1.0)
    return m


def reach(model: nn.Module, region: torch.Tensor) -> torch.Tensor:
    """(N, T, H', W') bool: the positions of the map before the pooling (``forward_features``)
    whose receptive field overlaps ``region`` ((N, T, H, W) bool input pixels)."""
    x = region.double().unsqueeze(1).expand(-1, 3, -1, -1, -1).contiguous()
    with torch.no_grad():
        return positive_copy(model).forward_features(x).sum(1) > 0


@pytest.fixture(scope="module")
def plain():
    return create_model("slowonly_tiny", num_classes=4).eval()


def test_the_temporal_receptive_field_is_5_frames(plain):
    """Structurally (a one-frame input reaches the output frames within 2 of it) and by an
    independent measure (the input frames the gradient of one output frame touches, random
    weights), against ``temporal_receptive_field()`` (two 3x1x1 convs, c4 and c5)."""
    assert plain.temporal_receptive_field() == 5 and set(plain.temporal_convs().values()) == {3}
    region = torch.zeros(T, T, S, S, dtype=torch.bool)
    for f in range(T):
        region[f, f] = True  # input frame f, whole frame
    hit = reach(plain, region).any(-1).any(-1)  # (input frame, output frame)
    for f in range(T):
        assert torch.nonzero(hit[f]).flatten().tolist() == list(range(max(0, f - 2), min(T, f + 3)))
    model = create_model("slowonly_tiny", num_classes=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    for o in range(T):
        x = torch.randn(1, 3, T, S, S, requires_grad=True)
        model.forward_features(x)[:, :, o].sum().backward()
        frames = torch.nonzero(x.grad.abs().sum((0, 1, 3, 4)) > 0).flatten().tolist()
        assert frames == list(range(max(0, o - 2), min(T, o + 3)))


def _demo_clip_frames() -> list[list[int]]:
    """The frames of the 16 the demo's clips take: validation's centre clip and the training
    clips at every random offset."""
    clips = [eval_clip_indices(16, T, 2, 1)[0].tolist()]
    for seed in range(20):
        clips.append(train_clip_indices(16, T, 2, np.random.default_rng(seed)).tolist())
    return [list(c) for c in {tuple(c) for c in clips}]


@pytest.mark.parametrize("split", ["train", "val"])
def test_no_position_sees_both_the_cue_and_the_disc(plain, split):
    """For 12 videos x every clip the demo samples: the positions the cue's pixels reach and
    those the disc's pixels reach (before the pooling) are disjoint; each is non-empty."""
    for i in range(12):
        lay = video_layout(i, split)
        video = paint_video(lay)
        for frames in _demo_clip_frames():
            clip = video[frames]  # (T, S, S, 3)
            off = torch.from_numpy(np.abs(clip.astype(int) - 128).max(-1) > 0)
            in_cue = torch.tensor([f in lay.cue_frames for f in frames]).view(T, 1, 1)
            in_disc = torch.tensor([f in lay.target_frames for f in frames]).view(T, 1, 1)
            assert in_cue.sum() == 2 and in_disc.sum() == 2 and (off == (off & (in_cue | in_disc))).all()
            seen = reach(plain, torch.stack([off & in_cue, off & in_disc]))
            assert seen[0].any() and seen[1].any()
            assert not (seen[0] & seen[1]).any(), f"{split} video {i}, frames {frames}"


def _interaction(model: nn.Module, a: int) -> torch.Tensor:
    """L(white, a) - L(black, a) - L(white, a+2) + L(black, a+2) of ``model``'s logits on the
    demo's centre clip of one layout painted with each cue and disc colour."""
    base = video_layout(0, "val")
    frames = eval_clip_indices(16, T, 2, 1)[0]
    logits = {}
    for cue in (0, 1):
        for disc in (a, (a + 2) % 4):
            clip = paint_video(base._replace(cue=cue, target=disc))[frames]
            x = torch.from_numpy(clip).double().div(255).permute(3, 0, 1, 2).unsqueeze(0)
            with torch.no_grad():
                logits[cue, disc] = model(x)[0]
    b = (a + 2) % 4
    return logits[0, a] - logits[1, a] - logits[0, b] + logits[1, b]


@pytest.mark.parametrize("a", [0, 1])
def test_the_plain_logits_are_additive_and_the_gc_ones_are_not(a):
    """Random weights (non-trivial BatchNorm statistics), eval mode, float64: the plain
    network's logits carry no cue x disc interaction at all; GC's do. And the labels of these
    four clips are an XOR pattern, which no additive score can get all right: classes a and
    a+2 would need s_a - s_{a+2} = F(cue) + G(disc) > 0 on (white, a) and (black, a+2) and
    < 0 on (black, a) and (white, a+2), whose two sums are the same number."""
    torch.manual_seed(0)
    nets = {}
    for name in ("slowonly_tiny", "gc_slowonly_tiny"):
        m = create_model(name, num_classes=4).double().eval()
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm3d):
                    mod.running_mean.normal_(0, 0.2)
                    mod.running_var.uniform_(0.5, 2)
                    mod.bias.normal_(0, 0.2)
        nets[name] = m
    plain = _interaction(nets["slowonly_tiny"], a)
    gc = _interaction(nets["gc_slowonly_tiny"], a)
    with torch.no_grad():
        scale = nets["slowonly_tiny"](torch.rand(1, 3, T, S, S, dtype=torch.float64)).abs().max()
    assert plain.abs().max() < 1e-12 * max(1.0, float(scale))
    assert gc.abs().max() > 1e-4
    b = (a + 2) % 4
    label = {}  # (cue, disc) -> label, as the generator labels its videos
    for i in range(200):
        lay = video_layout(i, "train")
        assert label.setdefault((lay.cue, lay.target), lay.label) == lay.label
    assert [label[k] for k in ((0, a), (1, b), (1, a), (0, b))] == [a, a, b, b]


def test_an_oracle_with_global_information_solves_it(tmp_path):
    """On the decoded validation videos: the hand-written oracle reads the cue in the first
    frame and the disc in the last and is right on every one; reading the disc alone is right
    on the white-cue half only."""
    root = generate_synthetic_videos(str(tmp_path / "set"), seed=0, train_size=1, val_size=48)
    records, _ = parse_video_list(f"{root}/val.txt", root)
    oracle = blind = white = 0
    for r in records:
        frames = read_video_frames(r.path, [0, 15])
        oracle += oracle_label(frames) == r.label
        blind += blind_oracle_label(frames) == r.label
        white += video_layout(int(r.path[-9:-4]), "val").cue == 0
    assert oracle == 48 and blind == white == 24  # the validation split cycles through the pairs
