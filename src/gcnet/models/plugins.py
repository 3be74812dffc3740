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
branch's last 1x1 conv + norm, before the residual add.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from gcnet.layers import create_block, list_blocks

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


class ContextPlug(nn.Module):
    """``module`` followed by a context block: ``forward(x) = context_block(module(x))``.

    ``state_dict`` / ``load_state_dict`` keep the wrapped module's keys at the plug's own
    name (no ``module.`` level); the block's keys are ``context_block.*``. Attributes the
    plug does not have are looked up on the wrapped module (``plug.out_channels``).
    """

    def __init__(self, module: nn.Module, block: nn.Module, channels: int, target: str = "") -> None:
        super().__init__()
        self.module = module
        self.context_block = block
        self.channels = channels
        self.target = target  # the module's name at insertion, for error messages

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.module(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or not 3 <= out.dim() <= 5 or out.shape[1] != self.channels:
            raise ValueError(f"add_context_blocks: module {self.target!r} returned {_describe(out)}; "
                             f"its context block expects an (N, {self.channels}, ...) tensor")  # fmt: skip
        return self.context_block(out)

    def state_dict(self, *args: Any, destination=None, prefix: str = "", keep_vars: bool = False):
        if args:  # torch's deprecated positional form: (destination, prefix, keep_vars)
            destination, prefix, keep_vars = (list(args) + [destination, prefix, keep_vars][len(args) :])[:3]
        if destination is None:
            destination = OrderedDict()
            destination._metadata = OrderedDict()  # type: ignore[attr-defined]
        self.module.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        self.context_block.state_dict(destination=destination, prefix=prefix + "context_block.",
                                      keep_vars=keep_vars)  # fmt: skip
        return destination

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:  # fmt: skip
        # the wrapped module's keys sit at the plug's name: move them under "module." for the
        # children's loaders (state_dict is this plug's own filtered copy)
        inner, block = prefix + "module.", prefix + "context_block."
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith((inner, block))]:
            state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name.startswith("__") or not modules or "module" not in modules:
                raise
            return getattr(modules["module"], name)

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
        return f"channels={self.channels}"


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
    find: Callable[[nn.Module], list[tuple[str, str, str | None]]]


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


def _by_class(classes: Mapping[str, Sequence[str]]) -> Callable[[nn.Module], list[tuple[str, str, None]]]:
    """Residual blocks by class name; the branch is the first of the listed children the
    block has (torchvision and timm use the same class names with other children)."""

    def find(model: nn.Module) -> list[tuple[str, str, None]]:
        out = []
        for name, m in model.named_modules():
            for child in classes.get(type(m).__name__, ()):
                if isinstance(m._modules.get(child), nn.Module):
                    out.append((name, child, None))
                    break
        return out

    return find


# torchvision: InvertedResidual.block (V3) / .conv (V2), MBConv / FusedMBConv.block;
# timm: InvertedResidual.bn3, DepthwiseSeparableConv.bn2, EdgeResidual.bn2 (after conv_pw(l))
_INVERTED_RESIDUALS = {
    "InvertedResidual": ("block", "conv", "bn3"),
    "MBConv": ("block",),
    "FusedMBConv": ("block",),
    "DepthwiseSeparableConv": ("bn2",),
    "EdgeResidual": ("bn2",),
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("resnet", "ResNet / ResNeXt / Wide ResNet of torchvision, timm and gcnet (layer1..layer4)",
               "`bn3` (Bottleneck) / `bn2` (BasicBlock): the last conv + BN of the residual branch, "
               "before the add (the paper's after_1x1; `gc_resnet50` exactly)", _resnet_blocks),
        Preset("mobilenet", "MobileNetV3 / V2 (torchvision `InvertedResidual`; timm MobileNetV3)",
               "the residual branch (`block`): after the linear 1x1 projection conv + BN, before the "
               "residual add where there is one", _by_class(_INVERTED_RESIDUALS)),
        Preset("efficientnet", "EfficientNet B0-B7 / V2 (torchvision `MBConv`, `FusedMBConv`; timm)",
               "the residual branch (`block`): after the 1x1 projection conv + BN (after the block's "
               "own SE), before stochastic depth and the add", _by_class(_INVERTED_RESIDUALS)),
        Preset("convnext", "ConvNeXt (torchvision `CNBlock`)",
               "the residual branch (`block`): after the second pointwise (1x1) linear, back in "
               "NCHW, before the layer scale, stochastic depth and the add",
               _by_class({"CNBlock": ("block",)})),
        Preset("regnet", "RegNetX / RegNetY (torchvision `ResBottleneckBlock`)",
               "the residual branch (`f`): after the last 1x1 conv + BN (after RegNetY's SE), "
               "before the add with the shortcut", _by_class({"ResBottleneckBlock": ("f",)})),
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
    position = parts[2] if len(parts) > 2 and parts[2] else "after_1x1"
    if position not in PRESET_POSITIONS:
        raise ValueError(f"after={spec!r}: position must be one of {PRESET_POSITIONS}, got {position!r}")
    try:
        stages = parse_stages(parts[3]) if len(parts) > 3 and parts[3] else _DEFAULT_STAGES
    except ValueError as e:
        raise ValueError(f"after={spec!r}: {e}") from None
    return PRESETS[parts[1]], position, stages


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
    **block_kwargs: Any,
) -> list[str]:
    """Pass the output of every module named by ``after`` through a new ``block``.

    Args:
        model: any module; changed in place.
        block: a `gcnet.layers.create_block` name (``gc``, ``snl``, ``se``, ``nl``).
        after: an fnmatch glob over the names of ``model.named_modules()``, a preset
            ``"preset:FAMILY[:POSITION[:STAGES]]"`` (`PRESETS`; position ``after_1x1``
            or ``after_block``, stages default ``c3-c5``), or a list of them.
        example_input: an input for the one traced forward that finds channel counts a
            module does not state and a preset's stages (default: zeros 1x3x224x224 in the
            model's dtype); given, it also checks every matched module's output.
        **block_kwargs: the block's own arguments (``ratio``, ``pooling``, ``fusion``...).

    Returns the names of the inserted blocks (``<module>.context_block``), in module order.
    Nothing is changed when an error is raised.
    """
    patterns = _after_patterns(model, block, after)
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
        channels = _target_channels(modules, name, records.get(name))
        plan.append(_plug(model, modules, name, channels, block, block_kwargs))
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
            found = preset.find(model)
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


def _target_channels(modules: Mapping[str, nn.Module], name: str, outs: list[Any] | None) -> int | None:
    """The channels of the map module ``name`` returns: from its traced outputs ``outs`` (one
    (N, C, ...) map, else a ValueError) or, not traced, from what it declares; a module
    already followed by a context block raises."""
    owner = _owner(modules, name)
    if owner is not None:
        raise ValueError(
            f"module {name!r} is already followed by the context block "
            f"{owner}.context_block (add_context_blocks was called on it before)"
        )
    if outs is None:
        return _declared_channels(modules[name])
    if not outs:
        raise ValueError(f"module {name!r} did not run in the forward on the example input")
    if len(outs) > 1:
        raise ValueError(f"module {name!r} runs {len(outs)} times per forward (a shared module); "
                         "pick modules that run once")  # fmt: skip
    if not isinstance(outs[0], tuple) or not 3 <= len(outs[0]) <= 5:
        what = f"a tensor of shape {outs[0]}" if isinstance(outs[0], tuple) else f"a {outs[0]}"
        raise ValueError(f"module {name!r} returns {what}, not an (N, C, ...) feature map")
    return outs[0][1]


def _plug(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    name: str,
    channels: int | None,
    block: str,
    block_kwargs: Mapping[str, Any],
) -> tuple[nn.Module, str, str, ContextPlug]:
    """(the parent, the attribute, ``name``, the `ContextPlug` to put there): a new
    ``block`` on the device and dtype of the module (or, parameter-free, of ``model``), in
    its training mode."""
    mod = modules[name]
    ref = next((t for t in (*mod.parameters(), *mod.buffers()) if t.is_floating_point()), None)
    if ref is None:  # a parameter-free module (an activation): the model's device and dtype
        ref = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    new = create_block(block, channels, **block_kwargs)
    if ref is not None:
        new = new.to(device=ref.device, dtype=ref.dtype)
    new.train(mod.training)
    parent, _, attr = name.rpartition(".")
    return modules[parent], attr, name, ContextPlug(mod, new, channels, name)


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
