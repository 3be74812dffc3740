import pytest
import torch
from torchvision.ops import SqueezeExcitation as TVSqueezeExcitation

from gcnet import GlobalContextBlock, NonLocalBlock, SimplifiedNonLocalBlock, SqueezeExcitation
from gcnet.layers import create_block, list_blocks
from tests.conftest import randomize_
from tests.helpers import num_params


def test_se_parity_with_torchvision():
    tv = randomize_(TVSqueezeExcitation(64, 4)).double()
    ours = SqueezeExcitation(64, ratio=1 / 16).double()
    sd = {
        k.replace("fc1.", "transform_mul.conv_in.").replace("fc2.", "transform_mul.conv_out."): v
        for k, v in tv.state_dict().items()
    }
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 64, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(ours(x), tv(x))
    assert ours.transform_mul.norm is None and ours.pooling == "avg"


def test_se_gradcheck():
    se = randomize_(SqueezeExcitation(16, 1 / 4), 0.5).double()
    assert torch.autograd.gradcheck(se, (torch.randn(2, 16, 3, 3, dtype=torch.float64, requires_grad=True),))


def test_create_block():
    assert {"gc", "nl", "se", "snl"} <= set(list_blocks()) and list_blocks() == sorted(list_blocks())
    assert type(create_block("gc", 64, ratio=1 / 4)) is GlobalContextBlock
    assert type(create_block("nl", 64, sub_sample=True)) is NonLocalBlock
    assert type(create_block("snl", 64)) is SimplifiedNonLocalBlock
    assert type(create_block("se", 64)) is SqueezeExcitation
    with pytest.raises(ValueError, match=r"unknown block 'gcc' \(did you mean 'gc'\?\)"):
        create_block("gcc", 64)
    with pytest.raises(ValueError, match="bad arguments for block 'se'.*pooling"):
        create_block("se", 64, pooling="att")


def test_param_count_r16_stage():
    """One GC r16 block on 256 channels: 257 (W_k) + 2*(256*16+16) + 2*16 (LN) params."""
    n = num_params(GlobalContextBlock(256))
    assert n == 257 + (256 * 16 + 16) + (16 * 256 + 256) + 32
