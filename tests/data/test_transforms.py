"""Classification augmentations (RandomResizedCrop, RandAugment, MixUp / CutMix), the label
smoothing loss and the segmentation photometric distortion / normalisation against their
formulas, computed by hand here."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gcnet.config import load_config
from gcnet.data import seg_transforms as st
from gcnet.data.transforms import build_batch_mix, build_transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _data_cfg(*sets):
    return load_config(None, ["data.image_size=32", "data.augment.hflip=false", *sets])["data"]


def _normalize_by_hand(x_uint8):
    x = x_uint8.double() / 255.0
    return ((x - torch.tensor(MEAN, dtype=torch.float64).view(3, 1, 1))
            / torch.tensor(STD, dtype=torch.float64).view(3, 1, 1)).float()  # fmt: skip


def _pil(h=50, w=64, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[: h // 2, : w // 3] = (250, 10, 10)  # structure, so crops of different regions differ
    return Image.fromarray(img)


def test_plain_transforms_are_resize_crop_and_normalize():
    img = _pil()
    # eval: short side to round(32 / 0.875) = 37, centre 32 x 32
    out = build_transforms(_data_cfg(), train=False)(img)
    resized = img.resize((round(64 * 37 / 50), 37), Image.BILINEAR)
    assert out.shape == (3, 32, 32)
    left, top = round((resized.width - 32) / 2), round((resized.height - 32) / 2)  # torchvision's rounding
    ref = _normalize_by_hand(torch.from_numpy(np.array(resized)).permute(2, 0, 1))
    ref = ref[:, top : top + 32, left : left + 32]
    assert (out - ref).abs().max() < 0.05  # PIL and torchvision: the same antialiased bilinear, to rounding
    # a tensor already at size (the synthetic set): only the normalisation
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(build_transforms(_data_cfg(), train=True, tensor_input=True)(x),
                               _normalize_by_hand(x), rtol=0, atol=1e-5)  # fmt: skip


def test_random_resized_crop_gives_the_size_and_changes_the_image():
    img = _pil()
    plain = build_transforms(_data_cfg(), train=True)
    rrc = build_transforms(_data_cfg("data.augment.random_resized_crop=true"), train=True)
    base = plain(img)
    outs = []
    for seed in range(4):
        torch.manual_seed(seed)
        outs.append(rrc(img))
    assert all(o.shape == base.shape == (3, 32, 32) for o in outs)
    assert all((o - base).abs().mean() > 0.05 for o in outs)
    assert (outs[0] - outs[1]).abs().mean() > 0.05  # a random crop, not a fixed one


def test_randaugment_keeps_the_size_and_changes_the_image():
    x = torch.from_numpy(np.array(_pil(32, 32))).permute(2, 0, 1).contiguous()
    plain = build_transforms(_data_cfg(), train=True, tensor_input=True)
    ra = build_transforms(_data_cfg("data.augment.randaugment=true"), train=True, tensor_input=True)
    torch.testing.assert_close(plain(x), _normalize_by_hand(x), rtol=0, atol=1e-5)
    changed = 0
    for seed in range(8):
        torch.manual_seed(seed)
        out = ra(x)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        changed += int((out - plain(x)).abs().max() > 0.1)
    assert changed >= 6  # two random ops per image; only identity / zero-magnitude ops keep it


def _batch(b=4, k=3):
    # each image a constant (its index + 1): where a pixel came from is readable
    x = torch.arange(1.0, b + 1).view(b, 1, 1, 1).expand(b, 3, 16, 20).clone()
    y = torch.tensor([0, 1, 2, 1])  # every label differs from its neighbour in the roll
    return x, y, k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixup_is_a_convex_combination_with_the_rolled_batch(seed):
    x, y, k = _batch()
    mix = build_batch_mix(_data_cfg("data.augment.mixup=0.8"), k)
    torch.manual_seed(seed)
    xm, ym = mix(x, y)
    lam = float(ym[0, y[0]])
    assert 0 < lam < 1
    onehot = torch.nn.functional.one_hot(y, k).float()
    torch.testing.assert_close(ym, lam * onehot + (1 - lam) * onehot.roll(1, 0))
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x.roll(1, 0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_pastes_a_box_and_weights_labels_by_area(seed):
    x, y, k = _batch()
    mix = build_batch_mix(_data_cfg("data.augment.cutmix=1.0"), k)
    torch.manual_seed(seed)
    xm, ym = mix(x, y)
    src = x.roll(1, 0)
    inside = xm[:, 0] == src[:, 0]  # (B, H, W): pixels taken from the previous image
    assert torch.equal(xm, torch.where(inside[:, None], src, x))
    box = inside[0]
    assert all(torch.equal(inside[i], box) for i in range(len(x)))  # one box for the batch
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    if len(rows):  # the box is a full rectangle
        assert int(box.sum()) == len(rows) * len(cols)
        assert torch.equal(rows, torch.arange(int(rows[0]), int(rows[-1]) + 1))
    lam = 1 - float(box.sum()) / box.numel()
    onehot = torch.nn.functional.one_hot(y, k).float()
    torch.testing.assert_close(ym, lam * onehot + (1 - lam) * onehot.roll(1, 0))


def test_mixup_and_cutmix_together_pick_one_per_batch_and_none_is_off():
    assert build_batch_mix(_data_cfg(), 3) is None
    x, y, k = _batch()
    mix = build_batch_mix(_data_cfg("data.augment.mixup=0.8", "data.augment.cutmix=1.0"), k)
    kinds = set()
    for seed in range(12):
        torch.manual_seed(seed)
        xm, _ = mix(x, y)
        blended = ((xm != x) & (xm != x.roll(1, 0))).any()
        kinds.add("mixup" if blended else "cutmix")
    assert kinds == {"mixup", "cutmix"}


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_loss_matches_the_formula(eps):
    from gcnet.tasks import get_task

    task_loss = get_task("classification").loss
    cfg = load_config(None, [f"train.label_smoothing={eps}"])
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-2.0, 1.5, 1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2, 2, 1])
    k = 3

    def logp(i, c):
        return logits[i, c].item() - math.log(sum(math.exp(v) for v in logits[i].tolist()))

    # hard labels: (1 - eps) * NLL of the label + eps / K * sum over classes of NLL
    ref = sum(-(1 - eps) * logp(i, int(y[i])) - eps / k * sum(logp(i, c) for c in range(k))
              for i in range(len(y))) / len(y)  # fmt: skip
    assert float(task_loss(cfg, logits, y)) == pytest.approx(ref, rel=1e-5)
    # soft (MixUp) targets q: the smoothed target (1 - eps) * q + eps / K
    q = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6], [0.5, 0.0, 0.5], [0.2, 0.2, 0.6]])
    ref = sum(-sum(((1 - eps) * q[i, c].item() + eps / k) * logp(i, c) for c in range(k))
              for i in range(len(y))) / len(y)  # fmt: skip
    assert float(task_loss(cfg, logits, q)) == pytest.approx(ref, rel=1e-5)


def _scripted_rand(monkeypatch, draws):
    """Replace the transforms' uniform draws: each call takes the next u in [0, 1) and
    returns lo + (hi - lo) * u."""
    it = iter(draws)
    monkeypatch.setattr(st, "_rand", lambda lo=0.0, hi=1.0: lo + (hi - lo) * next(it))


def _image():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 6, 7), dtype=torch.uint8, generator=g)
    img[:, 0, 0] = torch.tensor([250, 3, 128])  # values that clamp at both ends
    return img


SKIP = 0.9  # a draw above every gate's 1/2: that step is left out


@pytest.mark.parametrize(
    "draws, expect",
    [
        # brightness on: delta = -32 + 64 * 0.75 = +16; contrast first but off; no sat / hue
        ([0.0, 0.75, 0.0, SKIP, SKIP, SKIP], lambda x: x + 16),
        ([0.0, 0.125, 0.0, SKIP, SKIP, SKIP], lambda x: x - 24),
        # contrast first, factor 0.5 + 0.25 = 0.75
        ([SKIP, 0.0, 0.0, 0.25, SKIP, SKIP], lambda x: x * 0.75),
        # contrast last (after saturation / hue), factor 0.5 + 0.9 = 1.4, after +8 brightness
        ([0.0, 0.625, SKIP, SKIP, SKIP, 0.0, 0.9], lambda x: (x + 8).clamp(0, 255) * 1.4),
        # everything off: the image unchanged
        ([SKIP, 0.0, SKIP, SKIP, SKIP], lambda x: x),
    ],
)  # fmt: skip
def test_photometric_brightness_and_contrast_exactly(monkeypatch, draws, expect):
    img = _image()
    _scripted_rand(monkeypatch, draws)
    mask = torch.randint(0, 3, (6, 7))
    out, m = st.PhotoMetricDistortion()(img, mask)
    ref = expect(img.double()).clamp(0, 255).round().to(torch.uint8)
    assert out.dtype == torch.uint8 and torch.equal(m, mask)
    assert torch.equal(out, ref)


def test_photometric_saturation_blends_with_the_grey_image(monkeypatch):
    img = _image()
    # no brightness; contrast last but off; saturation on with factor 0.5 + 0.3 = 0.8; no hue
    _scripted_rand(monkeypatch, [SKIP, SKIP, 0.0, 0.3, SKIP, SKIP])
    out, _ = st.PhotoMetricDistortion()(img, torch.zeros(6, 7, dtype=torch.long))
    x = img.double()
    grey = 0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]  # ITU-R 601-2 luma
    ref = (0.8 * x + 0.2 * grey).clamp(0, 255).round()
    assert (out.double() - ref).abs().max() <= 1


def test_normalize_values_by_hand():
    img = torch.tensor([[[0, 255]], [[51, 102]], [[204, 153]]], dtype=torch.uint8)  # (3, 1, 2)
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.2, 0.1]
    x, m = st.Normalize(mean, std)(img, torch.tensor([[1, 255]], dtype=torch.uint8))
    ref = [[[(0 / 255 - 0.5) / 0.25, (1 - 0.5) / 0.25]], [[(0.2 - 0.4) / 0.2, (0.4 - 0.4) / 0.2]],
           [[(0.8 - 0.3) / 0.1, (0.6 - 0.3) / 0.1]]]  # fmt: skip
    torch.testing.assert_close(x, torch.tensor(ref), rtol=0, atol=1e-5)
    assert m.dtype == torch.int64 and m.tolist() == [[1, 255]]
