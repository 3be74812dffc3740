"""Weight import: official GCNet / mmcv ``ContextBlock`` and timm ``GlobalContext`` weights.

The functions here map *state dicts* (plain ``{key: tensor}``) from other libraries' layouts
onto gcnet's, and fail loudly on keys they do not understand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = [
    "context_block_from_mmcv",
    "global_context_from_timm",
    "is_mmdet_checkpoint",
    "nonlocal_from_mmcv",
    "resnet_from_mmdet",
    "segmentor_from_mmseg",
]

# mmcv ContextBlock: conv_mask, channel_{add,mul}_conv = Sequential(conv, LayerNorm, ReLU, conv)
_MMCV_BLOCK = [
    (re.compile(r"^conv_mask\.(weight|bias)$"), r"pool.conv_mask.\1"),
    (re.compile(r"^channel_(add|mul)_conv\.0\.(weight|bias)$"), r"transform_\1.conv_in.\2"),
    (re.compile(r"^channel_(add|mul)_conv\.1\.(weight|bias)$"), r"transform_\1.norm.\2"),
    (re.compile(r"^channel_(add|mul)_conv\.3\.(weight|bias)$"), r"transform_\1.conv_out.\2"),
]

# mmcv NonLocal2d: {g,theta,phi}.conv, conv_out.conv (+ conv_out.bn with a norm_cfg),
# concat_project.conv (concatenation); sub_sample wraps g and phi in Sequential(conv, MaxPool)
_MMCV_NL = [
    (re.compile(r"^(g|theta|phi)\.conv\.(weight|bias)$"), r"\1.\2"),
    (re.compile(r"^(g|phi)\.0\.conv\.(weight|bias)$"), r"\1.\2"),
    (re.compile(r"^concat_project\.conv\.weight$"), r"concat_project.weight"),
    (re.compile(r"^conv_out\.conv\.(weight|bias)$"), r"conv_out.\1"),
    (re.compile(r"^conv_out\.(?:bn|norm)\.(.+)$"), r"norm.\1"),
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


def _rename(state_dict: Mapping[str, torch.Tensor], rules: list, source: str) -> dict[str, torch.Tensor]:
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
    `gcnet.GlobalContextBlock` (same shapes; keys renamed).

    Keys: ``conv_mask.*`` -> ``pool.conv_mask.*``, ``channel_add_conv.{0,1,3}.*`` ->
    ``transform_add.{conv_in,norm,conv_out}.*`` and likewise ``channel_mul_conv``.
    Build the target block with the same ratio, pooling and fusion types.
    """
    return _rename(state_dict, _MMCV_BLOCK, "mmcv ContextBlock")


def nonlocal_from_mmcv(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the weights of one mmcv ``NonLocal2d`` (any mode, with or without ``sub_sample``,
    a BN after W_z or none) onto `gcnet.NonLocalBlock`: build it with the same mode,
    reduction, ``sub_sample``, ``use_scale`` and ``norm`` (``norm_cfg`` given or not)."""
    return _rename(state_dict, _MMCV_NL, "mmcv NonLocal2d")


def global_context_from_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the weights of one timm ``GlobalContext`` onto `gcnet.GlobalContextBlock`.

    timm's LayerNorm2d stores (P,) affine parameters (reshaped here to (P, 1, 1)) and uses
    eps=1e-6: build the target block with ``ln_eps=1e-6`` for identical outputs.
    """
    out = _rename(state_dict, _TIMM_BLOCK, "timm GlobalContext")
    for key, value in out.items():
        if ".norm." in key and value.dim() == 1:
            out[key] = value.reshape(-1, 1, 1)
    return out


# Official GCNet (mmdetection fork): layerX.Y.context_block.*; mmdet 2.x plug-ins:
# layerX.Y.context_block3.* (abbr + postfix); tolerate a gen_ prefix and digit postfixes.
_MMDET_PLUGIN = re.compile(r"^(layer\d+\.\d+)\.(?:gen_)?context_block\d*\.(.+)$")


def resnet_from_mmdet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbone weights of an official GCNet / mmdetection / mmsegmentation checkpoint ->
    `gcnet.models.ResNet` keys.

    Keeps the ``backbone.*`` entries (or all entries when there is no such prefix), renames
    plug-in ``ContextBlock`` weights to ``layerX.Y.context_block.*`` in gcnet's layout, and
    leaves the rest (torchvision-compatible ``conv1``/``bn1``/``stem``/``layerX`` keys) as is.
    Detector necks and heads are dropped: only the backbone maps onto gcnet.
    """
    sd = dict(state_dict)
    for wrapper in ("state_dict", "model"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = dict(sd[wrapper])
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    out: dict[str, torch.Tensor] = {}
    blocks: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        m = _MMDET_PLUGIN.match(key)
        if m:
            blocks.setdefault(m.group(1), {})[m.group(2)] = value
        else:
            out[key] = value
    for prefix, block_sd in blocks.items():
        for k, v in context_block_from_mmcv(block_sd).items():
            out[f"{prefix}.context_block.{k}"] = v
    return out


_MMCV_KEY = re.compile(r"context_block\d*\.(conv_mask|channel_(add|mul)_conv)\.")


def is_mmdet_checkpoint(state_dict: Mapping[str, object]) -> bool:
    """True for mmdetection-style checkpoints (``backbone.*`` keys, mmcv ContextBlock keys)."""
    return any(k.startswith("backbone.") or _MMCV_KEY.search(k) for k in state_dict)


def segmentor_from_mmseg(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmsegmentation ``EncoderDecoder`` checkpoint (FCN / GCNet / NonLocal heads on a
    ResNet-V1c) -> `gcnet.models.segmentation.EncoderDecoder` keys.

    ``backbone.*`` go through `resnet_from_mmdet`; ``decode_head.gc_block.*`` through
    `context_block_from_mmcv` and ``decode_head.nl_block.*`` through
    `nonlocal_from_mmcv` (both to ``decode_head.context_block.*``); the heads' other
    keys (``convs.i.conv``/``bn``, ``conv_cat``, ``conv_seg``) are the same in both layouts.
    """
    sd = dict(state_dict)
    for wrapper in ("state_dict", "model"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = dict(sd[wrapper])
    if not any(k.startswith("decode_head.") for k in sd):
        raise ValueError("not an mmsegmentation segmentor state dict: no decode_head.* keys")
    out = {f"backbone.{k}": v for k, v in resnet_from_mmdet(sd).items()}
    for block, convert in (("gc_block", context_block_from_mmcv), ("nl_block", nonlocal_from_mmcv)):
        prefix = f"decode_head.{block}."
        part = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if part:
            out.update({f"decode_head.context_block.{k}": v for k, v in convert(part).items()})
    for key, value in sd.items():
        if key.startswith(("decode_head.", "auxiliary_head.")) and not key.startswith(
            ("decode_head.gc_block.", "decode_head.nl_block.")
        ):
            out[key] = value
    return out
