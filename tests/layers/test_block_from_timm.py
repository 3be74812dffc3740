"""`gcnet.convert.block_from_timm`: every attention module timm's `create_attn` builds for the
family (and `GlobalResponseNorm`) becomes the gcnet block with the same outputs in float64,
on random weights, at two shapes; what it cannot convert is one clear error."""

import pytest
import torch

from gcnet.convert import block_from_timm
from tests.conftest import randomize_

timm_layers = pytest.importorskip("timm.layers")

CREATE_ATTN = ["se", "ese", "eca", "ecam", "ceca", "ge", "gc", "gca", "cbam", "lcbam",
               "coord", "scoord", "ela", "strip"]  # fmt: skip


def _randomized(module: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    module = randomize_(module, 0.2)
    for m in module.modules():  # BN statistics too, so eval mode is not the identity BN
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return module.double().eval()


@pytest.mark.parametrize("shape", [(2, 64, 9, 7), (1, 40, 5, 12)])
@pytest.mark.parametrize("name", CREATE_ATTN)
def test_create_attn_parity(name, shape):
    # timm 1.0.31's GatherExcite raises in its constructor on its MLP path (its default): the
    # parameter-free gather (theta-minus) is what it can build
    kw = {"use_mlp": False} if name == "ge" else {}
    tm = _randomized(timm_layers.create_attn(name, shape[1], **kw))
    ours = block_from_timm(tm).eval()
    assert type(ours).__module__.startswith("gcnet.layers")
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tm(x), rtol=1e-9, atol=1e-9)


def test_global_response_norm_parity():
    """timm's GRN is channels-last by default: (N, H, W, C); ours takes (N, C, H, W)."""
    from timm.layers.grn import GlobalResponseNorm

    tm = _randomized(GlobalResponseNorm(48))
    ours = block_from_timm(tm).eval()
    x = torch.randn(2, 48, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        ref = tm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(ours(x), ref, rtol=1e-9, atol=1e-9)


def test_unknown_module_and_unsupported_config():
    with pytest.raises(ValueError, match="no gcnet block for timm's Conv2d; it converts .*SEModule"):
        block_from_timm(torch.nn.Conv2d(4, 4, 1))
    with pytest.raises(ValueError, match="max pooling"):
        block_from_timm(timm_layers.SEModule(32, add_maxpool=True))
    with pytest.raises(ValueError, match="needs a timm nn.Module"):
        block_from_timm("eca")
