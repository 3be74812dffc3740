"""Put a block of the family into a CNN you already have: `add_context_blocks`.

    names = add_context_blocks(model, block="gc", after="layer[234].*.bn3", ratio=1 / 16)
    names = add_context_blocks(model, after="preset:mobilenet:after_1x1:c3-c5")

The output of every module that ``after`` names goes through a new block of the family
(``gc``, ``snl``, ``se``, ``nl``, built by `gcnet.layers.create_block` with the
block's own keyword arguments). The matched module is replaced, in its parent, by a
`ContextPlug` that holds it (``.module``) and the block (``.context_block``):

- the model's own state-dict keys do not change (the plug saves and loads the wrapped
  module's keys at the module's own name), so pretrained weights load before or after the
  call, with only the blocks' ``<name>.context_block.*`` keys missing;
- the blocks start as the identity (add fusion, last conv zero-initialised: ``gc``, ``snl``,
  ``nl``), so a pretrained model computes exactly what it did (``se`` and mul fusion scale by
  sigmoid(.) and do not start as the identity);
- it is plain module composition (no hooks): ``torch.compile``, ONNX / TorchScript export,
  DDP, SyncBN conversion (any converter: it replaces the norm inside the plug), deepcopy /
  EMA, ``channels_last`` and autocast see an ordinary module tree. Parameter *names*
  (``named_parameters``) gain the plug's ``.module`` level; state-dict keys do not.

Presets (``after="preset:FAMILY[:POSITION[:STAGES]]"``) name the plug-in points of common
backbones (`PRESETS`); ``after_1x1`` is the paper's position: after the residual
branch's last 1x1 conv + norm, before the residual add. A preset may have positions of its
own: ``preset:ultralytics:backbone`` / ``neck`` / ``all`` (YOLO models, `presets_ultralytics`).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from gcnet.layers import create_block, list_blocks
from gcnet.layers._transparent import TransparentWrapper
from gcnet.layers.layout import check_layout

from .presets_ultralytics import ULTRALYTICS_POSITIONS, find_ultralytics_blocks
from .resnet import STAGES, parse_stages

__all__ = [
    "ContextPlug",
    "PRESETS",
    "PRESET_POSITIONS",
    "add_context_blocks",
    "apply_context",
    "check_context_config",
    "inserted_blocks",
    "remove_context_blocks",
]

PRESET_POSITIONS = ("after_1x1", "after_block")
_DEFAULT_STAGES = ("c3", "c4", "c5")


class ContextPlug(TransparentWrapper):
    """``module`` followed by a context block: ``forward(x) = context_block(module(x))``.

    ``state_dict`` / ``load_state_dict`` keep the wrapped module's keys at the plug's own
    name (no ``module.`` level); the block's keys are ``context_block.*``. Attributes the
    plug does not have are looked up on the wrapped module (``plug.out_channels``).
    ``layout``: where the module's output has its channels, ``"nchw"`` (dim 1), ``"nhwc"`` /
    ``"nlc"`` (the last dim; the block is built for that layout, `gcnet.layers.layout`).
    """

    def __init__(
        self, module: nn.Module, block: nn.Module, channels: int, target: str = "", layout: str = "nchw"
    ) -> None:
        super().__init__()
        self.module = module
        self.context_block = block
        self.channels = channels
        self.target = target  # the module's name at insertion, for error messages
        self.layout = layout

    _inner, _extras = "module", ("context_block",)  # the module's keys at the plug's name

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.module(*args, **kwargs)
        dim = 1 if self.__dict__.get("layout", "nchw") == "nchw" else -1  # pickled before layouts: nchw
        if not isinstance(out, torch.Tensor) or not 3 <= out.dim() <= 5 or out.shape[dim] != self.channels:
            want = f"(N, {self.channels}, ...)" if dim == 1 else f"(N, ..., {self.channels})"
            raise ValueError(f"add_context_blocks: module {self.target!r} returned {_describe(out)}; "
                             f"its context block expects an {want} tensor")  # fmt: skip
        return self.context_block(out)

    # a wrapped container still indexes, iterates and counts like itself
    def __getitem__(self, index: Any) -> Any:
        return self.module[index]

    def __len__(self) -> int:
        return len(self.module)

    def __iter__(self):
        return iter(self.module)

    def __bool__(self) -> bool:
        return True

    def extra_repr(self) -> str:
        layout = self.__dict__.get("layout", "nchw")
        return f"channels={self.channels}" + (f", layout={layout!r}" if layout != "nchw" else "")


def _describe(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    return f"a {type(out).__name__}"


# -- presets -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preset:
    """A family's plug-in points: ``find(model)`` -> [(residual block name, residual branch
    child, stage or None)]; a None stage is found from the block's output stride."""

    name: str
    models: str
    where: str
    find: Callable[..., list[tuple[str, str, str | None]]]
    # the POSITIONs the preset takes, the first the default; a preset with its own positions
    # (not after_1x1 / after_block) is called as ``find(model, position)`` and its block goes
    # after the found child
    positions: tuple[str, ...] = PRESET_POSITIONS


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _resnet_blocks(model: nn.Module) -> list[tuple[str, str, str | None]]:
    for prefix, m in model.named_modules():
        layers = [m._modules.get(f"layer{k}") for k in range(1, 5)]
        if not all(isinstance(layer, nn.Sequential) for layer in layers):
            continue
        out = []
        for stage, (k, layer) in zip(STAGES, enumerate(layers, start=1)):
            for i, blk in layer.named_children():
                branch = "bn3" if "bn3" in blk._modules else "bn2" if "bn2" in blk._modules else None
                if branch is None:
                    return []
                out.append((_join(prefix, f"layer{k}.{i}"), branch, stage))
        return out
    return []


def _child(module: nn.Module | None, path: str) -> nn.Module | None:
    """The submodule at the dotted ``path`` of ``module``, or None."""
    for part in path.split("."):
        module = module._modules.get(part) if isinstance(module, nn.Module) else None
    return module


def _by_class(classes: Mapping[str, Sequence[str]]) -> Callable[[nn.Module], list[tuple[str, str, None]]]:
    """Residual blocks by class name (or ``module.ClassName`` where libraries share a name);
    the branch is the first of the listed (dotted) children the block has (torchvision and
    timm use the same class names with other children)."""

    def find(model: nn.Module) -> list[tuple[str, str, None]]:
        out = []
        for name, m in model.named_modules():
            cls = type(m)
            for child in classes.get(f"{cls.__module__}.{cls.__name__}", classes.get(cls.__name__, ())):
                if isinstance(_child(m, child), nn.Module):
                    out.append((name, child, None))
                    break
        return out

    return find


_SWIN_BLOCKS = ("SwinTransformerBlock", "SwinTransformerBlockV2", "SwinTransformerV2Block")


def _swin_blocks(model: nn.Module) -> list[tuple[str, str, str]]:
    """Swin blocks (torchvision, timm): the MLP's last linear (V2: the post-norm ``norm2`` after
    it); the stage from the patch mergings before the block (stride 4 first: c2)."""
    out, merges = [], 0
    for name, m in model.named_modules():
        cls = type(m).__name__
        if cls.startswith("PatchMerging"):
            merges += 1
        elif cls in _SWIN_BLOCKS and isinstance(m._modules.get("mlp"), nn.Module):
            linears = [n for n, sub in m.mlp.named_modules() if isinstance(sub, nn.Linear)]
            branch = "norm2" if cls != "SwinTransformerBlock" else f"mlp.{linears[-1]}" if linears else None
            if branch is not None:
                out.append((name, branch, f"c{merges + 2}"))
    return out


# torchvision: InvertedResidual.block (V3) / .conv (V2), MBConv / FusedMBConv.block;
# timm: InvertedResidual / CondConvResidual.bn3, DepthwiseSeparableConv.bn2, EdgeResidual.bn2
# (after conv_pw(l)), MobileNetV4's UniversalInvertedResidual.pw_proj (1x1 conv + BN, no act)
_INVERTED_RESIDUALS = {
    "InvertedResidual": ("block", "conv", "bn3"),
    "CondConvResidual": ("bn3",),
    "MBConv": ("block",),
    "FusedMBConv": ("block",),
    "DepthwiseSeparableConv": ("bn2",),
    "EdgeResidual": ("bn2",),
    "UniversalInvertedResidual": ("pw_proj",),
}

# timm CSPNet / DarkNet blocks: the branch's last conv (+ BN), before drop path and the add
_CSP_BLOCKS = {
    "timm.models.cspnet.BottleneckBlock": ("conv3",),
    "timm.models.cspnet.DarkBlock": ("conv2",),
    "timm.models.cspnet.EdgeBlock": ("conv2",),
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("resnet", "ResNet / ResNeXt / Wide ResNet of torchvision, timm (ResNet-B/C/D: `resnet50d`, "
               "`resnet26d`, SE / ECA variants) and gcnet (layer1..layer4)",
               "`bn3` (Bottleneck) / `bn2` (BasicBlock): the last conv + BN of the residual branch, "
               "before timm's own `se` and the add (the paper's after_1x1; `gc_resnet50` exactly)",
               _resnet_blocks),
        Preset("mobilenet", "MobileNetV3 / V2 (torchvision `InvertedResidual`; timm MobileNetV3, "
               "MobileNetV4 `UniversalInvertedResidual`)",
               "after the linear 1x1 projection conv + BN (torchvision `block`, timm `bn3` / `bn2` / "
               "`pw_proj`), before the residual add where there is one", _by_class(_INVERTED_RESIDUALS)),
        Preset("efficientnet", "EfficientNet B0-B7 / V2 (torchvision `MBConv`, `FusedMBConv`; timm "
               "`InvertedResidual`, `EdgeResidual`, `CondConvResidual`)",
               "after the 1x1 projection conv + BN (torchvision `block`, timm `bn3` / `bn2`; after the "
               "block's own SE), before stochastic depth and the add", _by_class(_INVERTED_RESIDUALS)),
        Preset("convnext", "ConvNeXt V1 / V2 (torchvision `CNBlock`; timm `ConvNeXtBlock`)",
               "after the second pointwise (1x1) linear, before the layer scale, stochastic depth "
               "and the add: torchvision's `block`, back in NCHW; timm's `mlp.fc2`, where the map is "
               "(N, H, W, C) (layout nhwc; NCHW with `conv_mlp=True`)",
               _by_class({"CNBlock": ("block",), "ConvNeXtBlock": ("mlp.fc2",)})),
        Preset("regnet", "RegNetX / RegNetY (torchvision `ResBottleneckBlock`; timm `Bottleneck` of "
               "`timm.models.regnet`)",
               "after the last 1x1 conv + BN (torchvision's branch `f`, timm's `conv3`; after "
               "RegNetY's SE), before the add with the shortcut",
               _by_class({"ResBottleneckBlock": ("f",), "timm.models.regnet.Bottleneck": ("conv3",)})),
        Preset("csp", "timm CSPNet / DarkNet (`cspresnet50`, `cspresnext50`, `cspdarknet53`, "
               "`cs3darknet_*`, `darknet53`: `BottleneckBlock`, `DarkBlock`, `EdgeBlock`)",
               "after the residual branch's last conv + BN: `BottleneckBlock.conv3` (1x1, no act: where "
               "timm's `attn_last` goes), `DarkBlock.conv2` (the 3x3 that restores the channels), "
               "`EdgeBlock.conv2` (1x1); before drop path and the add, inside the cross-stage half",
               _by_class(_CSP_BLOCKS)),
        Preset("swin", "Swin V1 / V2 (torchvision `SwinTransformerBlock(V2)`; timm "
               "`SwinTransformerBlock`, `SwinTransformerV2Block`)",
               "the MLP branch: after its second linear (the pointwise projection back to C; V2: "
               "after the post-norm `norm2` that follows it), before stochastic depth and the add; "
               "the map is (N, H, W, C) (layout nhwc; timm's: (N, L, C) tokens, nlc)", _swin_blocks),
        Preset("maxvit", "MaxViT (torchvision `MaxVit`: the `MBConv` of each `MaxVitBlock`)",
               "the MBConv's residual branch (`layers`): after its last 1x1 conv (`conv_c`; the "
               "block is pre-norm, no norm follows), before stochastic depth and the add; NCHW",
               _by_class({"torchvision.models.maxvit.MBConv": ("layers",)})),
        Preset("ultralytics", "Ultralytics YOLOv5 / v8 / 11 / 12 / 26 detection, segmentation, pose "
               "(`yolo.model`: `C3`, `C2f`, `C3k2`, `C2PSA`, `A2C2f`, ...)",
               "positions `backbone` (default), `neck`, `all`: after each CSP block's last 1x1 conv "
               "(`cv2`; `cv3` in `C3`) that fuses its split paths, inside the layer",
               find_ultralytics_blocks, positions=ULTRALYTICS_POSITIONS),
    )
}  # fmt: skip


def _parse_preset(spec: str) -> tuple[Preset, str, tuple[str, ...]]:
    parts = spec.split(":")
    if len(parts) > 4 or len(parts) < 2 or not parts[1]:
        raise ValueError(f"after={spec!r}: a preset looks like 'preset:FAMILY[:POSITION[:STAGES]]', "
                         "e.g. 'preset:resnet:after_1x1:c3-c5'")  # fmt: skip
    if parts[1] not in PRESETS:
        raise ValueError(f"after={spec!r}: no preset for {parts[1]!r} (presets: {', '.join(PRESETS)}); "
                         "for another architecture pass a glob over model.named_modules(), "
                         "e.g. after='features.*.block'")  # fmt: skip
    preset = PRESETS[parts[1]]
    position = parts[2] if len(parts) > 2 and parts[2] else preset.positions[0]
    if position not in preset.positions:
        raise ValueError(f"after={spec!r}: position must be one of {preset.positions} for preset "
                         f"{preset.name!r}, got {position!r}")  # fmt: skip
    try:
        stages = parse_stages(parts[3]) if len(parts) > 3 and parts[3] else _DEFAULT_STAGES
    except ValueError as e:
        raise ValueError(f"after={spec!r}: {e}") from None
    return preset, position, stages


def _stage_of(stride: float) -> str:
    """Output stride 4 / 8 / 16 / 32 -> c2 / c3 / c4 / c5 (as ResNet's layer1..layer4)."""
    return f"c{round(math.log2(max(stride, 1.0)))}"


# -- finding modules and channels ---------------------------------------------------------


def _declared_channels(m: nn.Module) -> int | None:
    """The output channels a module states: a conv's ``out_channels``, a norm's features."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return int(m.out_channels)
    if isinstance(m, nn.modules.batchnorm._NormBase):  # BatchNorm*, SyncBatchNorm, InstanceNorm*
        return int(m.num_features)
    if isinstance(m, nn.GroupNorm):
        return int(m.num_channels)
    if isinstance(m, FrozenBatchNorm2d):
        return int(m.weight.numel())
    return None


def _default_input(model: nn.Module) -> torch.Tensor:
    p = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    cin = conv.in_channels if conv is not None else 3
    return torch.zeros(1, cin, 224, 224, dtype=p.dtype if p is not None else torch.float32,
                       device=p.device if p is not None else "cpu")  # fmt: skip


def _trace(model: nn.Module, modules: Mapping[str, nn.Module], example: Any) -> dict[str, list[Any]]:
    """Every output of each of ``modules`` in one forward of ``model`` (eval mode, no grad,
    the modes restored): {name: [shape tuple, or the output's type name, ...]}."""
    records: dict[str, list[Any]] = {name: [] for name in modules}

    def hook(name: str):
        def record(mod, args, out):
            records[name].append(tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__)

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    modes = [(m, m.training) for m in model.modules()]
    args = example if isinstance(example, tuple) else (example,)
    try:
        model.eval()
        with torch.no_grad():
            model(*args)
    except Exception as e:
        shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args]
        msg = " ".join(str(e).split())[:300]
        raise ValueError(
            f"add_context_blocks: the forward on the example input {shapes} failed "
            f"({type(e).__name__}: {msg}); pass example_input= that the model accepts"
        ) from None
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return records


def _no_match(pattern: str, model: nn.Module, names: list[str]) -> ValueError:
    near = difflib.get_close_matches(pattern, names, n=4, cutoff=0.4)
    shown = near or [n for n in names if n.count(".") <= 1][:6] or names[:6]
    return ValueError(f"after={pattern!r} matches no module of {type(model).__name__}; module names "
                      f"look like: {', '.join(shown)} ({len(names)} in all: named_modules())")  # fmt: skip


def _owner(modules: Mapping[str, nn.Module], name: str) -> str | None:
    """The plug ``name`` already belongs to: the plug itself, its wrapped module or its block."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if isinstance(modules.get(head), ContextPlug):
            rest = parts[i:]
            if not rest or rest == ["module"] or rest[0] == "context_block":
                return head
            return None
    return None


def add_context_blocks(
    model: nn.Module,
    block: str = "gc",
    after: str | Sequence[str] = "preset:resnet:after_1x1:c3-c5",
    *,
    example_input: torch.Tensor | tuple | None = None,
    layout: str | None = None,
    **block_kwargs: Any,
) -> list[str]:
    """Pass the output of every module named by ``after`` through a new ``block``.

    Args:
        model: any module; changed in place.
        block: a `gcnet.layers.create_block` name (``gc``, ``snl``, ``se``, ``nl``).
        after: an fnmatch glob over the names of ``model.named_modules()``, a preset
            ``"preset:FAMILY[:POSITION[:STAGES]]"`` (`PRESETS`; position ``after_1x1``
            or ``after_block``, or the preset's own, e.g. ``preset:ultralytics:neck``;
            stages default ``c3-c5``), or a list of them.
        example_input: an input for the one traced forward that finds channel counts a
            module does not state and a preset's stages (default: zeros 1x3x224x224 in the
            model's dtype); given, it also checks every matched module's output.
        layout: where the matched modules' outputs have their channels: ``"nchw"`` (N, C, ...),
            ``"nhwc"`` (N, ..., C) or ``"nlc"`` (N, L, C) tokens (`gcnet.layers.layout`).
            Default: per module, from what it is (a conv or a norm over dim 1: nchw; an
            ``nn.Linear`` or ``nn.LayerNorm``: the last dim) or, for a container, from the
            channels its last such layer states and the traced output's shape; an output
            where that count is both dim 1 and the last dim is an error asking for ``layout``.
        **block_kwargs: the block's own arguments (``ratio``, ``pooling``, ``fusion``...;
            ``prefix_tokens`` for ``nlc`` tokens led by a class token).

    Returns the names of the inserted blocks (``<module>.context_block``), in module order.
    Nothing is changed when an error is raised.
    """
    patterns = _after_patterns(model, block, after)
    if layout is not None:
        check_layout(layout)
    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    # 1. the targets: globs directly, presets as candidates whose stage may need the trace
    targets, candidates = _match(model, patterns, names)
    # 2. one traced forward, if anything needs it; it gives the presets' stages
    records, in_size = _trace_if_needed(model, modules, targets, candidates, example_input)
    targets |= _preset_targets(candidates, records, in_size)
    # 3. checks and channels, then the blocks (nothing is changed before all are built)
    plan = []
    for name in (n for n in names if n in targets):
        channels, where = _target_channels(modules, name, records.get(name), layout)
        plan.append(_plug(model, modules, name, channels, block, block_kwargs, where))
    for parent, attr, _, plug in plan:
        parent._modules[attr] = plug
    return [f"{name}.context_block" for _, _, name, _ in plan]


_Candidate = tuple[str, str, str | None, tuple[str, ...]]  # a preset's (block, target, stage, stages)


def _after_patterns(model: nn.Module, block: str, after: str | Sequence[str]) -> list[str]:
    """``after`` as a list of patterns, once ``model``, ``block`` and ``after`` are checked."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"add_context_blocks needs an nn.Module, got {type(model).__name__}")
    if block not in list_blocks():
        near = difflib.get_close_matches(str(block), list_blocks(), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown block {block!r}{hint}; expected one of {list_blocks()}")
    patterns = [after] if isinstance(after, str) else list(after)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"after must be a glob, a preset or a list of them, got {after!r}")
    return patterns


def _match(model: nn.Module, patterns: list[str], names: list[str]) -> tuple[set[str], list[_Candidate]]:
    """(the modules the globs name, the presets' candidates): a pattern that matches nothing
    raises."""
    targets: set[str] = set()
    candidates: list[_Candidate] = []
    for pattern in patterns:
        if pattern.startswith("preset:"):
            preset, position, stages = _parse_preset(pattern)
            own = preset.positions != PRESET_POSITIONS
            found = preset.find(model, position) if own else preset.find(model)
            if not found:
                raise ValueError(f"after={pattern!r}: preset {preset.name!r} ({preset.models}) does not fit "
                                 f"this {type(model).__name__}; pass a glob over model.named_modules() "
                                 "instead, e.g. after='features.*.block'")  # fmt: skip
            for blk, branch, stage in found:
                candidates.append(
                    (blk, blk if position == "after_block" else f"{blk}.{branch}", stage, stages)
                )
        else:
            hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise _no_match(pattern, model, names)
            targets.update(hits)
    return targets, candidates


def _trace_if_needed(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    targets: set[str],
    candidates: list[_Candidate],
    example_input: Any,
) -> tuple[dict[str, list[Any]], int | None]:
    """(what the traced modules returned, the example's height) from one forward, run only
    when a preset's stage is unknown, a target does not state its channels, or
    ``example_input`` is given (then every target is checked); ``({}, None)`` otherwise."""
    need = {b: modules[b] for b, _, stage, _ in candidates if stage is None}
    wanted = targets | {t for _, t, _, _ in candidates}
    need.update(
        {t: modules[t] for t in wanted if example_input is not None or _declared_channels(modules[t]) is None}
    )
    if not need:
        return {}, None
    example = _default_input(model) if example_input is None else example_input
    records = _trace(model, need, example)
    first = example[0] if isinstance(example, tuple) else example
    in_size = first.shape[-2] if isinstance(first, torch.Tensor) and first.dim() >= 3 else None
    return records, in_size


def _preset_targets(candidates: list[_Candidate], records: Mapping[str, list[Any]], in_size) -> set[str]:
    """The candidates whose stage (known, or from the traced output size) the preset asks for."""
    targets = set()
    for blk, target, stage, stages in candidates:
        if stage is None:
            outs = records[blk]
            if len(outs) != 1 or not isinstance(outs[0], tuple) or len(outs[0]) < 3 or in_size is None:
                raise ValueError(f"add_context_blocks: cannot find the stage of block {blk!r} from the "
                                 f"example input (its outputs: {outs}); pass a 4D example_input")  # fmt: skip
            stage = _stage_of(in_size / outs[0][-2])
        if stage in stages:
            targets.add(target)
    return targets


def _target_channels(
    modules: Mapping[str, nn.Module], name: str, outs: list[Any] | None, layout: str | None = None
) -> tuple[int | None, str]:
    """(channels, layout) of the map module ``name`` returns: from its traced outputs ``outs``
    (one map of rank 3 to 5, else a ValueError; `_resolve_layout`) or, not traced, from what
    it declares (channels first); a module already followed by a context block raises."""
    owner = _owner(modules, name)
    if owner is not None:
        raise ValueError(
            f"module {name!r} is already followed by the context block "
            f"{owner}.context_block (add_context_blocks was called on it before)"
        )
    if outs is None:
        if layout not in (None, "nchw"):
            kind = type(modules[name]).__name__
            raise ValueError(
                f"layout={layout!r} does not fit module {name!r}: a {kind} returns (N, C, ...) maps"
            )
        return _declared_channels(modules[name]), "nchw"
    if not outs:
        raise ValueError(f"module {name!r} did not run in the forward on the example input")
    if len(outs) > 1:
        raise ValueError(f"module {name!r} runs {len(outs)} times per forward (a shared module); "
                         "pick modules that run once")  # fmt: skip
    if not isinstance(outs[0], tuple) or not 3 <= len(outs[0]) <= 5:
        what = f"a tensor of shape {outs[0]}" if isinstance(outs[0], tuple) else f"a {outs[0]}"
        raise ValueError(f"module {name!r} returns {what}, not an (N, C, ...) feature map")
    return _resolve_layout(modules[name], name, outs[0], layout)


def _declared_dim(m: nn.Module) -> tuple[int, int] | None:
    """(channels, their dim) a module states for its output: dim 1 for a conv or a norm over
    channels, -1 for an ``nn.Linear`` or an ``nn.LayerNorm`` over the last dim (exactly that
    class: timm's LayerNorm2d subclasses it and normalises dim 1)."""
    channels = _declared_channels(m)
    if channels is not None:
        return channels, 1
    if isinstance(m, nn.Linear):
        return m.out_features, -1
    if type(m) is nn.LayerNorm and len(m.normalized_shape) == 1:
        return m.normalized_shape[0], -1
    return None


def _resolve_layout(m: nn.Module, name: str, shape: tuple, layout: str | None) -> tuple[int, str]:
    """(channels, layout) of the ``shape`` module ``m`` returned: ``layout`` when given; else
    what ``m`` is (`_declared_dim`); else the channels of its last layer that states them, in
    dim 1 or the last dim of ``shape`` (both: ambiguous, a ValueError); else dim 1."""
    tokens = "nlc" if len(shape) == 3 else "nhwc"
    own = _declared_dim(m)
    if layout is not None:
        if layout == "nlc" and len(shape) != 3 or own is not None and (own[1] == 1) != (layout == "nchw"):
            raise ValueError(f"layout={layout!r} does not fit module {name!r}: a {type(m).__name__} "
                             f"returning a tensor of shape {shape}")  # fmt: skip
        return (shape[1] if layout == "nchw" else shape[-1]), layout
    if own is not None:
        return own[0], "nchw" if own[1] == 1 else tokens
    inner = (_declared_dim(sub) for sub in reversed(list(m.modules())[1:]))
    hint = next((d[0] for d in inner if d is not None), None)
    if hint is not None and shape[-1] == hint:
        if shape[1] == hint:
            raise ValueError(f"module {name!r} returns a tensor of shape {shape}: its {hint} channels may be "
                             f"dim 1 or the last dim; pass layout='nchw' or {tokens!r}")  # fmt: skip
        return hint, tokens
    return shape[1], "nchw"


def _plug(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    name: str,
    channels: int | None,
    block: str,
    block_kwargs: Mapping[str, Any],
    layout: str = "nchw",
) -> tuple[nn.Module, str, str, ContextPlug]:
    """(the parent, the attribute, ``name``, the `ContextPlug` to put there): a new
    ``block`` for maps in ``layout`` on the device and dtype of the module (or,
    parameter-free, of ``model``), in its training mode."""
    mod = modules[name]
    ref = next((t for t in (*mod.parameters(), *mod.buffers()) if t.is_floating_point()), None)
    if ref is None:  # a parameter-free module (an activation): the model's device and dtype
        ref = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    new = create_block(block, channels, layout=layout, **block_kwargs)
    if ref is not None:
        new = new.to(device=ref.device, dtype=ref.dtype)
    new.train(mod.training)
    parent, _, attr = name.rpartition(".")
    return modules[parent], attr, name, ContextPlug(mod, new, channels, name, layout)


def inserted_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """Every block `add_context_blocks` put into ``model``, by its module name."""
    return {
        f"{n}.context_block": m.context_block for n, m in model.named_modules() if isinstance(m, ContextPlug)
    }


def remove_context_blocks(model: nn.Module) -> list[str]:
    """Undo `add_context_blocks`: every plug is replaced by the module it wraps.
    Returns the names of the removed blocks."""
    plugs = [(n, m) for n, m in model.named_modules() if isinstance(m, ContextPlug)]
    modules = dict(model.named_modules())
    for name, plug in reversed(plugs):  # inner plugs first
        parent, _, attr = name.rpartition(".")
        modules[parent]._modules[attr] = plug.module
    return [f"{n}.context_block" for n, _ in plugs]


# -- configs ---------------------------------------------------------------------------------


def check_context_config(context: Any, key: str = "model.context") -> None:
    """Check a ``model.context`` mapping (``{block: gc, after: ..., <block arguments>}``)
    without a model: the keys, the block's name and arguments; raise `ValueError`."""
    if not isinstance(context, Mapping):
        raise ValueError(
            f"{key} must be a mapping like {{block: gc, after: 'preset:resnet'}}, got {context!r}"
        )
    if not context:
        return
    after = context.get("after")
    if not (isinstance(after, str) and after) and not (
        isinstance(after, (list, tuple)) and after and all(isinstance(a, str) and a for a in after)
    ):
        raise ValueError(f"{key}.after must be a glob over the model's module names or a preset "
                         f"('preset:resnet:after_1x1:c3-c5'), or a list of them, got {after!r}")  # fmt: skip
    for a in [after] if isinstance(after, str) else after:
        if a.startswith("preset:"):
            try:
                _parse_preset(a)
            except ValueError as e:
                raise ValueError(f"{key}.{e}") from None
    shape = context.get("example_input")
    if shape is not None and not (
        isinstance(shape, (list, tuple)) and shape and all(isinstance(s, int) and s > 0 for s in shape)
    ):
        raise ValueError(f"{key}.example_input must be a shape like [1, 3, 224, 224], got {shape!r}")
    block = context.get("block", "gc")
    kwargs = {k: v for k, v in context.items() if k not in ("block", "after", "example_input")}
    try:  # the name and the argument names (values that depend on the channels are checked later)
        create_block(block, 256, **kwargs)
    except ValueError as e:
        if str(e).startswith(("unknown block", "bad arguments")):
            raise ValueError(f"{key}: {e}") from None


def apply_context(model: nn.Module, context: Mapping[str, Any]) -> list[str]:
    """`add_context_blocks` from a ``model.context`` mapping; an empty one does nothing."""
    check_context_config(context)
    if not context:
        return []
    kw = dict(context)
    block, after, shape = kw.pop("block", "gc"), kw.pop("after"), kw.pop("example_input", None)
    example = None
    if shape is not None:
        example = _default_input(model).new_zeros(tuple(shape))
    return add_context_blocks(model, block, after, example_input=example, **kw)
