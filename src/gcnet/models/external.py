"""Models of other libraries by name: ``tv:NAME`` (a torchvision classification constructor)
and ``timm:NAME`` (``timm.create_model``, with ``pip install 'gcnet[timm]'``).

    model = create_model("tv:convnext_tiny", num_classes=10,
                         context={"block": "gc", "after": "preset:convnext"})
    model = create_model("timm:efficientnet_b0", pretrained=True)

``pretrained``: ``False``; ``True`` / ``"default"`` for the library's default weights
(torchvision's weights enum, timm's ``pretrained=True``), a torchvision weights name
(``"IMAGENET1K_V2"``), or a local checkpoint path (loaded after the context blocks, so a
checkpoint of a model with blocks loads too). A failed download is a one-line ValueError.
With pretrained torchvision weights and another ``num_classes`` the last classifier layer
is replaced by a fresh one (timm does the same itself).
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

from gcnet.utils.extras import require

from .plugins import apply_context
from .weights import download_weights, load_checkpoint_file, load_state_dict_checked

__all__ = ["EXTERNAL_PREFIXES", "check_external_name", "create_external", "is_external"]

EXTERNAL_PREFIXES = ("tv:", "timm:")


def is_external(name: object) -> bool:
    return isinstance(name, str) and name.startswith(EXTERNAL_PREFIXES)


def _import_timm():
    return require("timm", "a timm:NAME model")


def _unknown(name: str, choices: list[str], lib: str) -> ValueError:
    near = difflib.get_close_matches(name.split(":", 1)[1], choices, n=3)
    hint = f"; did you mean {[name.split(':', 1)[0] + ':' + n for n in near]}?" if near else ""
    return ValueError(f"unknown {lib} model {name!r}{hint}")


def check_external_name(name: str) -> None:
    """Raise a ValueError unless ``name`` is ``tv:<torchvision classifier>`` or ``timm:<model>``."""
    lib, _, arch = name.partition(":")
    if lib == "tv":
        import torchvision

        choices = torchvision.models.list_models(module=torchvision.models)
        if arch not in choices:
            raise _unknown(name, choices, "torchvision classification")
    elif lib == "timm":
        timm = _import_timm()
        if not timm.is_model(arch):
            raise _unknown(name, timm.list_models(), "timm")
    else:
        raise ValueError(f"model {name!r}: an external model name starts with one of {EXTERNAL_PREFIXES}")


def _is_path(pretrained: Any) -> bool:
    return isinstance(pretrained, (str, os.PathLike)) and (
        os.path.isfile(pretrained) or str(pretrained).endswith((".pth", ".pt", ".bin", ".safetensors"))
    )


def _replace_head(model: nn.Module, old: int, num_classes: int, what: str) -> None:
    """The last ``nn.Linear`` with ``old`` outputs -> a fresh one with ``num_classes``."""
    heads = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == old]
    if not heads:
        raise ValueError(
            f"{what}: no classifier layer with {old} outputs to replace for num_classes={num_classes}"
        )
    name, lin = heads[-1]
    parent, _, attr = name.rpartition(".")
    new = nn.Linear(lin.in_features, num_classes, bias=lin.bias is not None)
    model.get_submodule(parent)._modules[attr] = new.to(lin.weight.device, lin.weight.dtype)
    warnings.warn(f"{what}: classifier {name} ({old} classes) not loaded into a {num_classes}-class model "
                  "(fine-tuning to other classes)", UserWarning, stacklevel=3)  # fmt: skip


def _torchvision(arch: str, pretrained: Any, num_classes: int | None, kwargs: dict) -> nn.Module:
    import torchvision

    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if not pretrained or _is_path(pretrained):
        return torchvision.models.get_model(arch, weights=None, **kwargs)
    enum = torchvision.models.get_model_weights(arch)
    key = (
        None
        if pretrained is True or str(pretrained).lower() in ("default", "torchvision")
        else str(pretrained)
    )
    try:
        w = enum[key] if key else enum.DEFAULT
    except KeyError:
        raise ValueError(f"unknown torchvision weights {key!r} for tv:{arch}; expected one of "
                         f"{[m.name for m in enum]}") from None  # fmt: skip
    classes = len(w.meta["categories"])
    want = kwargs.pop("num_classes", classes)
    model = download_weights(lambda: torchvision.models.get_model(arch, weights=w, **kwargs),
                             f"torchvision {arch} weights ({w.name})", w.url)  # fmt: skip
    if want != classes:
        _replace_head(model, classes, want, f"torchvision {arch} weights ({w.name})")
    return model


def _timm(arch: str, pretrained: Any, num_classes: int | None, kwargs: dict) -> nn.Module:
    timm = _import_timm()
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if not pretrained or _is_path(pretrained):
        return timm.create_model(arch, pretrained=False, **kwargs)
    if pretrained is not True and str(pretrained).lower() not in ("default", "timm"):
        raise ValueError(f"pretrained={pretrained!r} for timm:{arch}: use True, or name the weights in the "
                         f"model (timm:{arch}.<tag>), or give a checkpoint path")  # fmt: skip
    cfg = timm.models.get_pretrained_cfg(arch)
    url = (cfg.url or (f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else "?")) if cfg else "?"

    def fetch():
        try:
            return timm.create_model(arch, pretrained=True, **kwargs)
        except RuntimeError as e:  # e.g. no pretrained weights for this model
            raise ValueError(f"timm:{arch}: {' '.join(str(e).split())}") from None

    return download_weights(fetch, f"timm {arch} weights", url)


def create_external(
    name: str,
    pretrained: bool | str = False,
    num_classes: int | None = None,
    context: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``tv:NAME`` / ``timm:NAME`` (``**kwargs`` go to the constructor), put the
    ``context`` blocks in (`gcnet.models.plugins.apply_context`), load ``pretrained``."""
    check_external_name(name)
    lib, _, arch = name.partition(":")
    build = _torchvision if lib == "tv" else _timm
    try:
        model = build(arch, pretrained, num_classes, dict(kwargs))
    except TypeError as e:  # an argument the constructor does not take
        raise ValueError(f"bad arguments for model {name!r}: {' '.join(str(e).split())}") from None
    if context:
        apply_context(model, context)
    if pretrained and _is_path(pretrained):
        path = os.fspath(pretrained)
        load_state_dict_checked(model, load_checkpoint_file(path), f"checkpoint {path}")
    return model
