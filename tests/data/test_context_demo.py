"""The demo's far-key set: context is necessary by construction. The plain demo network's
theoretical receptive field (computed structurally, and checked against gradients) never
reaches the key from an object pixel; a hand-written oracle with global information solves
the task, and the best without the key is one object class in three."""

import numpy as np
import pytest
import torch

from gcnet.data.context_demo import FarKeySegmentation, blind_oracle_predict, oracle_predict
from gcnet.models import create_model
from gcnet.tools.receptive_field import reach, receptive_field_halfwidth


@pytest.fixture(scope="module")
def plain():
    return create_model("fcn_tiny_s4", num_classes=4).eval()


def _key_mask(ds, i):
    m = np.zeros((ds.image_size, ds.image_size), bool)
    m[ds.key_region(ds.layout(i)[1])] = True
    return m


def test_the_structural_receptive_field_is_the_gradients_support(plain):
    """The structural RF (positive copy) against an independent measure: the support of the
    gradient of output pixels w.r.t. the input, with random weights, at every offset modulo
    the stride (4)."""
    half = receptive_field_halfwidth(plain, 128)
    assert half == 32  # 2 strided convs, 2 BasicBlocks, 2 head convs at stride 4, x4 bilinear
    model = create_model("fcn_tiny_s4", num_classes=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    widest = 0
    for o in range(64, 68):
        x = torch.randn(1, 3, 128, 128, requires_grad=True)
        model(x)[0, :, o, o].sum().backward()
        ys, xs = torch.nonzero(x.grad.abs().sum((0, 1)) > 0, as_tuple=True)
        widest = max(widest, int((ys - o).abs().max()), int((xs - o).abs().max()))
    assert widest == half


def test_no_object_pixel_can_see_the_key(plain):
    """For every labelled pixel whose class the key decides (the objects), the key lies
    outside the plain network's receptive field, on 48 training and validation images."""
    for split in ("train", "val"):
        ds = FarKeySegmentation(24, 96, split)
        assert receptive_field_halfwidth(plain, 128) < ds.min_distance
        keys = torch.from_numpy(np.stack([_key_mask(ds, i) for i in range(len(ds))]))
        seen = reach(plain, keys).numpy()
        for i in range(len(ds)):
            objects = ds.object_mask(i)
            assert objects.any()
            assert not (seen[i] & objects).any(), f"{split} image {i}: an object pixel sees the key"
            assert seen[i][_key_mask(ds, i)].all()  # not vacuous: the key sees itself
            # and the geometry itself: Chebyshev distance >= min_distance from every key pixel
            ky, kx = np.nonzero(_key_mask(ds, i))
            oy, ox = np.nonzero(objects)
            d = np.maximum(np.abs(oy[:, None] - ky[None]), np.abs(ox[:, None] - kx[None])).min()
            assert d >= ds.min_distance


def test_labels_and_determinism():
    ds = FarKeySegmentation(40, 96, "val")
    for i in range(len(ds)):
        img, mask = ds.render(i)
        cls, side, _ = ds.layout(i)
        assert set(np.unique(mask)) == {0, cls}
        assert (mask[ds.key_region(side)] == cls).all()  # the key's own pixels: its colour class
        assert (mask[ds.object_mask(i)] == cls).all()
    a, b = FarKeySegmentation(4, 96, "train"), FarKeySegmentation(4, 96, "val")
    x, y = a[1]
    assert torch.equal(x, FarKeySegmentation(4, 96, "train")[1][0]) and x.dtype == torch.uint8
    assert not torch.equal(x, b[1][0])
    assert {FarKeySegmentation(60, 96).layout(i)[0] for i in range(60)} == {1, 2, 3}
    with pytest.raises(ValueError, match="no room"):
        FarKeySegmentation(4, 64, min_distance=50)
    with pytest.raises(ValueError, match="split"):
        FarKeySegmentation(4, 96, "dev")


def test_an_oracle_with_global_information_solves_it_and_without_it_cannot():
    ds = FarKeySegmentation(64, 96, "val")
    hit = obj_hit = obj_n = blind_hit = 0
    for i in range(len(ds)):
        img, mask = ds.render(i)
        pred = oracle_predict(img)
        hit += int((pred == mask).sum())
        objects = ds.object_mask(i)
        obj_hit += int((pred[objects] == mask[objects]).sum())
        obj_n += int(objects.sum())
        blind_hit += int((blind_oracle_predict(img)[objects] == mask[objects]).sum())
    assert hit / (len(ds) * 96 * 96) > 0.995
    assert obj_hit / obj_n > 0.98
    assert 0.15 < blind_hit / obj_n < 0.55  # a fixed guess: right on the images of its class only
