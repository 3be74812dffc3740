"""Weight import: official GCNet / mmcv ``ContextBlock`` and timm ``GlobalContext`` weights.

The functions here map *state dicts* (plain ``{key: tensor}``) from other libraries' layouts
onto gcnet's, and fail loudly on keys they do not understand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["context_block_from_mmcv", "global_context_from_timm"]

# mmcv ContextBlock: conv_mask, channel_{add,mul}_conv = Sequential(conv, LayerNorm, ReLU, conv)
_MMCV_BLOCK = [
    (re.compile(r"^conv_mask\.(weight|bias)$"), r"pool.conv_mask.\1"),
    (re.compile(r"^channel_(add|mul)_conv\.0\.(weight|bias)$"), r"transform_\1.conv_in.\2"),
    (re.compile(r"^channel_(add|mul)_conv\.1\.(weight|bias)$"), r"transform_\1.norm.\2"),
    (re.compile(r"^channel_(add|mul)_conv\.3\.(weight|bias)$"), r"transform_\1.conv_out.\2"),
]

# timm GlobalContext: conv_attn, mlp_{add,scale} = ConvMlp(fc1, norm (LayerNorm2d), act, fc2)
_TIMM_BLOCK = [
    (re.compile(r"^conv_attn\.(weight|bias)$"), r"pool.conv_mask.\1"),
    (re.compile(r"^mlp_add\.fc1\.(weight|bias)$"), r"transform_add.conv_in.\1"),
    (re.compile(r"^mlp_add\.norm\.(weight|bias)$"), r"transform_add.norm.\1"),
    (re.compile(r"^mlp_add\.fc2\.(weight|bias)$"), r"transform_add.conv_out.\1"),
    (re.compile(r"^mlp_scale\.fc1\.(weight|bias)$"), r"transform_mul.conv_in.\1"),
    (re.compile(r"^mlp_scale\.norm\.(weight|bias)$"), r"transform_mul.norm.\1"),
    (re.compile(r"^mlp_scale\.fc2\.(weight|bias)$"), r"transform_mul.conv_out.\1"),
]


def _rename(
    state_dict: Mapping[str, torch.Tensor], rules: list, source: str
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        for pattern, repl in rules:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not a {source} state dict: unexpected keys {sorted(unknown)}")
    if not out:
        raise ValueError(f"not a {source} state dict: it holds no keys")
    return out


def context_block_from_mmcv(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the weights of one mmcv / official GCNet ``ContextBlock`` onto
    :class:`gcnet.GlobalContextBlock` (same shapes; keys renamed).

    Keys: ``conv_mask.*`` -> ``pool.conv_mask.*``, ``channel_add_conv.{0,1,3}.*`` ->
    ``transform_add.{conv_in,norm,conv_out}.*`` and likewise ``channel_mul_conv``.
    Build the target block with the same ratio, pooling and fusion types.
    """
    return _rename(state_dict, _MMCV_BLOCK, "mmcv ContextBlock")


def global_context_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the weights of one timm ``GlobalContext`` onto :class:`gcnet.GlobalContextBlock`.

    timm's LayerNorm2d stores (P,) affine parameters (reshaped here to (P, 1, 1)) and uses
    eps=1e-6: build the target block with ``ln_eps=1e-6`` for identical outputs.
    """
    out = _rename(state_dict, _TIMM_BLOCK, "timm GlobalContext")
    for key, value in out.items():
        if ".norm." in key and value.dim() == 1:
            out[key] = value.reshape(-1, 1, 1)
    return out
