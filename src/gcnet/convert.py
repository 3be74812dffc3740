"""Weight import: official GCNet / mmcv ``ContextBlock`` and timm ``GlobalContext`` weights.

The functions here map *state dicts* (plain ``{key: tensor}``) from other libraries' layouts
onto gcnet's, and fail loudly on keys they do not understand.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gcnet.layers.context import GlobalContextBlock

__all__ = [
    "TimmGlobalContext",
    "block_from_timm",
    "context_block_from_mmcv",
    "global_context_from_timm",
    "is_mmdet_checkpoint",
    "nonlocal_from_mmcv",
    "replace_timm_global_context",
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


# -- timm's GC models: their GlobalContext modules -> gcnet blocks with timm's keys ------------


class _ChannelNorm(nn.LayerNorm):
    """LayerNorm over the P channels of the pooled (N, P, 1, 1) context with (P,) parameters: what
    timm's ``LayerNorm2d`` computes there, with its parameter shapes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.flatten(1), self.normalized_shape, self.weight, self.bias, self.eps).view_as(x)


def _to_timm_key(key: str) -> str:
    """A `GlobalContextBlock` key -> the timm ``GlobalContext`` one (the inverse of the renames of
    `global_context_from_timm`)."""
    key = key.replace("pool.conv_mask.", "conv_attn.", 1)
    for ours, theirs in (("transform_add.", "mlp_add."), ("transform_mul.", "mlp_scale.")):
        if key.startswith(ours):
            key = theirs + key[len(ours) :].replace("conv_in.", "fc1.").replace("conv_out.", "fc2.")
    return key


class TimmGlobalContext(GlobalContextBlock):
    """A `gcnet.GlobalContextBlock` that saves and loads timm ``GlobalContext`` keys and shapes.

    Its keys are timm's (``conv_attn``, ``mlp_add`` / ``mlp_scale`` with ``fc1``, ``norm`` (P,),
    ``fc2``), so a timm model with these in place of its ``GlobalContext`` modules has the
    model's own state dict: timm checkpoints load into it and its checkpoints load into timm.
    It also loads gcnet's keys. Built by `replace_timm_global_context`.

    Args:
        channels: C.
        hidden: P, timm's ``rd_channels`` (rounded, not floored as gcnet's ``int(C * ratio)``).
        pooling: ``"att"`` (timm's ``use_attn``) or ``"avg"``.
        fusion: ``"add"`` (timm's ``gca``, the paper's), ``"mul"`` (timm's ``gc``) or both.
        ln_eps: timm's LayerNorm2d epsilon (1e-6).
    """

    def __init__(self, channels: int, hidden: int, pooling: str = "att", fusion: str | tuple = "add",
                 ln_eps: float = 1e-6) -> None:  # fmt: skip
        super().__init__(channels, (hidden + 0.5) / channels, pooling, fusion, ln_eps=ln_eps)
        self.ratio = hidden / channels
        for t in (self.transform_add, self.transform_mul):
            if t is not None:
                t.norm = _ChannelNorm(hidden, eps=ln_eps)
                t.reset_parameters()

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        if args:  # torch's deprecated positional form: (destination, prefix, keep_vars)
            destination, prefix, keep_vars = (list(args) + [destination, prefix, keep_vars][len(args) :])[:3]
        if destination is None:
            destination = OrderedDict()
            destination._metadata = OrderedDict()  # type: ignore[attr-defined]
        own = {_to_timm_key(k): v for k, v in super().state_dict(keep_vars=keep_vars).items()}
        order = ("conv_attn", "mlp_add", "mlp_scale")  # timm's module order
        for key in sorted(own, key=lambda k: order.index(k.split(".")[0])):
            destination[prefix + key] = own[key]
        return destination

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:  # fmt: skip
        for key in [k for k in state_dict if k.startswith(prefix)]:
            local = key[len(prefix) :]
            rule = next((r for r in _TIMM_BLOCK if r[0].match(local)), None)
            if rule is not None:
                state_dict[prefix + rule[0].sub(rule[1], local)] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)  # fmt: skip


def _is_timm_gc(module: nn.Module) -> bool:
    return type(module).__name__ == "GlobalContext" and type(module).__module__.startswith("timm.")


def _twin_of(name: str, gc: nn.Module) -> TimmGlobalContext:
    """The `TimmGlobalContext` computing what timm's ``gc`` at ``name`` computes, its weights loaded
    (same device, dtype and mode); a configuration gcnet's block lacks is a ValueError."""
    mlps = [m for m in (gc.mlp_add, gc.mlp_scale) if m is not None]
    what = f"timm GlobalContext {name!r}"
    if not mlps:
        raise ValueError(f"{what} has neither fusion (fuse_add, fuse_scale): nothing to swap")
    for mlp in mlps:
        if type(mlp.act).__name__ != "ReLU":
            raise ValueError(f"{what} uses {type(mlp.act).__name__} in its transform; gcnet's block: ReLU")
        if mlp.drop.p or not isinstance(mlp.norm, nn.LayerNorm) or mlp.fc1.bias is None:
            raise ValueError(f"{what}: its transform differs from LayerNorm + ReLU with biases, no dropout")
    if gc.mlp_scale is not None and type(gc.gate).__name__ != "Sigmoid":
        raise ValueError(f"{what} gates with {type(gc.gate).__name__}; gcnet's block: a sigmoid")
    fc1 = mlps[0].fc1
    fusion = tuple(f for f, m in (("add", gc.mlp_add), ("mul", gc.mlp_scale)) if m is not None)
    pooling = "att" if gc.conv_attn is not None else "avg"
    twin = TimmGlobalContext(fc1.in_channels, fc1.out_channels, pooling, fusion, float(mlps[0].norm.eps))
    twin = twin.to(device=fc1.weight.device, dtype=fc1.weight.dtype)
    twin.load_state_dict(gc.state_dict())
    return twin.train(gc.training)


def replace_timm_global_context(model: nn.Module) -> list[str]:
    """Swap every timm ``GlobalContext`` in ``model`` for the equivalent gcnet block, in place.

    timm's GC models (``gcresnet33ts``, ``gcresnet50t``, ``gcresnext26ts``, ``gcresnext50ts``:
    ``attn_layer="gca"``, add fusion, the paper's; any timm model built with
    ``attn_layer="gc"``: scale fusion, timm's default) then run gcnet's
    `GlobalContextBlock` (its fused backward, ``attention()`` maps, `gcnet.tools`) with
    the same outputs, and keep timm's state-dict keys and shapes (`TimmGlobalContext`):
    ``model.load_state_dict(timm_checkpoint)`` works before or after the call, and the
    model's checkpoints load into timm's own.

        model = timm.create_model("gcresnet50t", pretrained=True)
        names = replace_timm_global_context(model)   # ['stages.0.0.attn', ...]

    Returns the names of the swapped modules. A ``GlobalContext`` whose transform gcnet's
    block does not compute (another activation than ReLU, e.g. SiLU in
    ``gc_efficientnetv2_rw_t``; another gate than a sigmoid) is a ValueError, raised before
    anything changes; so is a model without one.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"replace_timm_global_context needs an nn.Module, got {type(model).__name__}")
    if _is_timm_gc(model):
        raise ValueError("replace_timm_global_context got a timm GlobalContext itself; for one block use "
                         "block_from_timm")  # fmt: skip
    found = [(n, m) for n, m in model.named_modules(remove_duplicate=False) if _is_timm_gc(m)]
    if not found:
        raise ValueError(f"replace_timm_global_context: {type(model).__name__} has no timm GlobalContext "
                         "(timm's gc / gca attention, e.g. gcresnet50t); nothing to replace")  # fmt: skip
    twins: dict[int, TimmGlobalContext] = {}
    for name, gc in found:  # every twin built (and checked) before the model changes
        if id(gc) not in twins:
            twins[id(gc)] = _twin_of(name, gc)
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, gc in found:
        parent, _, attr = name.rpartition(".")
        modules[parent]._modules[attr] = twins[id(gc)]
    return [name for name, _ in found]


# -- one timm attention module -> the equivalent gcnet block ----------------------------------


def _ratio_for(hidden: int, channels: int) -> float:
    """A ratio whose ``int(channels * ratio)`` is exactly ``hidden`` (no float round-down)."""
    return (hidden + 0.5) / channels


def _plain_relu_sigmoid(module, what: str) -> None:
    """timm's defaults that gcnet's GC / SE blocks implement: a ReLU and a sigmoid gate."""
    from torch import nn

    act = module.mlp_add.act if what == "GlobalContext" and module.mlp_add is not None else None
    if act is None and what == "GlobalContext" and module.mlp_scale is not None:
        act = module.mlp_scale.act
    if what == "SEModule":
        act = module.act
    gate = getattr(module, "gate", None)
    if act is not None and not isinstance(act, nn.ReLU):
        raise ValueError(f"block_from_timm: this {what} uses {type(act).__name__}; gcnet's block has a ReLU")
    if gate is not None and type(gate).__name__ not in ("Sigmoid",):
        raise ValueError(f"block_from_timm: this {what} gates with {type(gate).__name__}; gcnet's: a sigmoid")


def _gc_from_timm(module) -> torch.nn.Module:
    from gcnet.layers import GlobalContextBlock

    _plain_relu_sigmoid(module, "GlobalContext")
    mlp = module.mlp_add if module.mlp_add is not None else module.mlp_scale
    if mlp is None:
        raise ValueError("block_from_timm: this timm GlobalContext has neither fusion (fuse_add, fuse_scale)")
    channels, hidden = mlp.fc1.weight.shape[1], mlp.fc1.weight.shape[0]
    fusion = tuple(f for f, m in (("add", module.mlp_add), ("mul", module.mlp_scale)) if m is not None)
    block = GlobalContextBlock(
        channels,
        _ratio_for(hidden, channels),
        pooling="att" if module.conv_attn is not None else "avg",
        fusion=fusion,
        ln_eps=float(mlp.norm.eps),
    )
    ref = module.conv_attn if module.conv_attn is not None else mlp.fc1
    block = block.to(device=ref.weight.device, dtype=ref.weight.dtype)
    block.load_state_dict(global_context_from_timm(module.state_dict()), strict=True)
    return block


def _se_from_timm(module) -> torch.nn.Module:
    from torch import nn

    from gcnet.layers import SqueezeExcitation

    _plain_relu_sigmoid(module, "SEModule")
    if getattr(module, "add_maxpool", False) or not isinstance(getattr(module, "bn", None), nn.Identity):
        raise ValueError("block_from_timm: timm SEModule adds max pooling or a norm (gcnet's SE: neither)")
    if module.fc1.bias is None:
        raise ValueError("block_from_timm: this timm SEModule has no biases (bias=False); gcnet's SE: biases")
    channels, hidden = module.fc1.weight.shape[1], module.fc1.weight.shape[0]
    block = SqueezeExcitation(channels, ratio=_ratio_for(hidden, channels))
    block = block.to(device=module.fc1.weight.device, dtype=module.fc1.weight.dtype)
    sd = {f"transform_mul.conv_{'in' if k.startswith('fc1') else 'out'}.{k.split('.')[-1]}": v
          for k, v in module.state_dict().items()}  # fmt: skip
    block.load_state_dict(sd, strict=True)
    return block


def _family_converters() -> dict[str, object]:
    """{timm class name: a gcnet block class with ``from_timm``}, from the block registry."""
    from gcnet.layers.registry import registered_classes

    out: dict[str, object] = {}
    for cls in registered_classes():
        info, convert = getattr(cls, "info", None), getattr(cls, "from_timm", None)
        if info is not None and convert is not None:
            out.update(dict.fromkeys(info.timm_classes, cls))
    return out


def block_from_timm(module: torch.nn.Module) -> torch.nn.Module:
    """The gcnet block equivalent to one timm attention module, its weights loaded.

    Covers every module timm's `create_attn` builds for the family (``se``, ``ese``, ``eca``,
    ``ecam``, ``ceca``, ``ge``, ``gc``, ``gca``, ``cbam``, ``lcbam``, ``coord``, ``scoord``,
    ``ela``, ``strip``) and ``GlobalResponseNorm``; same outputs in float64 (the tests
    check 1e-9 on random weights). The block takes (N, C, ...) inputs (timm's GRN is
    channels-last: build with ``layout="nhwc"`` where the map is (N, H, W, C)). A module
    whose configuration gcnet's block does not implement raises a ValueError naming it.

        from timm.layers import create_attn
        block = block_from_timm(create_attn("eca", 256))
    """
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"block_from_timm needs a timm nn.Module, got {type(module).__name__}")
    name = type(module).__name__
    if name == "GlobalContext":
        return _gc_from_timm(module)
    if name == "SEModule":
        return _se_from_timm(module)
    family = _family_converters()
    if name not in family:
        known = sorted({"GlobalContext", "SEModule", *family})
        raise ValueError(f"block_from_timm: no gcnet block for timm's {name}; it converts {known}")
    return family[name].from_timm(module)
