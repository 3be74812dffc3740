"""What every block of the registry promises, checked over `list_blocks()`: its `BlockInfo`
is true (identity at init, the ranks it takes), channels_last and bf16 autocast work, and
the family compiles with ``torch.compile`` and exports to ONNX (one model holding every
2D block, so the slow steps run once)."""

import pytest
import torch
from torch import nn

from gcnet.layers import create_block, list_blocks
from gcnet.layers.registry import block_info
from tests.conftest import randomize_

C = 32
BLOCKS = list_blocks()
_SHAPES = {1: (2, C, 11), 2: (2, C, 7, 9), 3: (2, C, 3, 5, 6)}


def _train_free(name: str) -> nn.Module:
    """The block in eval mode (BN uses running statistics; no data-dependent batch stats)."""
    return create_block(name, C).eval()


@pytest.mark.parametrize("name", BLOCKS)
def test_info_is_complete(name):
    info = block_info(name)
    assert info is not None, f"block {name!r} has no BlockInfo"
    assert info.title and info.pooling and info.transform and info.fusion and info.paper
    assert set(info.dims) <= {1, 2, 3} and 2 in info.dims


@pytest.mark.parametrize("name", BLOCKS)
def test_identity_at_init_is_what_info_says(name):
    torch.manual_seed(0)
    x = torch.randn(_SHAPES[2])
    with torch.no_grad():
        same = torch.equal(_train_free(name)(x), x)
    assert same == block_info(name).identity_at_init


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("name", BLOCKS)
def test_ranks_are_what_info_says(name, dim):
    """A rank the info lists gives an output of the input's shape; any other is one clear
    ValueError naming the input's rank."""
    blk = _train_free(name)
    if isinstance(getattr(blk, "dims", None), int) and dim in block_info(name).dims:
        blk = create_block(name, C, dims=dim).eval()  # a block built for one rank (CBAM's conv)
    blk = randomize_(blk, 0.1)
    x = torch.randn(_SHAPES[dim])
    if dim in block_info(name).dims:
        with torch.no_grad():
            y = blk(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
    else:
        with pytest.raises(ValueError, match=rf"{dim + 2}D|\b{dim}D\b|rank|dimension"):
            blk(x)


@pytest.mark.parametrize("name", BLOCKS)
def test_channels_last_and_autocast(name):
    torch.manual_seed(0)
    blk = randomize_(_train_free(name), 0.1)
    x = torch.randn(_SHAPES[2])
    with torch.no_grad():
        ref = blk(x)
        cl = blk(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp = blk(x)
    assert lp.shape == x.shape and torch.isfinite(lp.float()).all()
    torch.testing.assert_close(lp.float(), ref, rtol=0.05, atol=0.05)


@pytest.fixture(scope="module")
def family_2d():
    """Every block in sequence, randomised so none is the identity (a mistake shows)."""
    torch.manual_seed(0)
    return nn.Sequential(*[randomize_(_train_free(n), 0.1) for n in BLOCKS]).eval()


def test_the_family_compiles(family_2d):
    x = torch.randn(_SHAPES[2])
    with torch.no_grad():
        ref = family_2d(x)
        out = torch.compile(family_2d, backend="aot_eager")(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_the_family_exports_to_onnx(family_2d, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(_SHAPES[2])
    path = tmp_path / "family.onnx"
    torch.onnx.export(family_2d, (x,), dynamo=True).save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), family_2d(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", BLOCKS)
def test_every_block_plugs_into_a_backbone(name):
    """A backbone's plug-in spec takes any registered block, keeps the block's own init
    through the backbone's weight init, and an identity-at-init block leaves the network's
    output unchanged."""
    from gcnet.models.resnet import BasicBlock, PluginSpec, ResNet

    torch.manual_seed(0)
    net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=4, plugin=PluginSpec(name, stages=("c5",))).eval()
    blk = net.layer4[0].context_block
    fresh = create_block(name, blk_channels := 512)
    for (k, v), (k2, v2) in zip(blk.state_dict().items(), fresh.state_dict().items()):
        if not v.is_floating_point() or (v.numel() > 1 and v.std() == 0):  # deterministic inits
            assert k == k2 and torch.equal(v, v2), f"{name}: {k} changed by the backbone's init"
    x = torch.randn(1, 3, 64, 64)  # c5 2x2: SRM's std needs two positions
    with torch.no_grad():
        out = net(x)
        net.layer4[0].context_block = nn.Identity()
        plain = net(x)
    assert torch.equal(out, plain) == block_info(name).identity_at_init, blk_channels


@pytest.mark.parametrize("name", BLOCKS)
def test_every_block_goes_in_with_add_context_blocks(name):
    from gcnet.models.plugins import add_context_blocks, remove_context_blocks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), nn.BatchNorm2d(C), nn.ReLU()).eval()
    x = torch.randn(2, 3, 9, 8)
    with torch.no_grad():
        before = model(x)
        assert add_context_blocks(model, name, after="1") == ["1.context_block"]
        after = model(x)
    assert torch.equal(after, before) == block_info(name).identity_at_init
    assert remove_context_blocks(model) == ["1.context_block"]
