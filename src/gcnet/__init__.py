"""gcnet: Global Context Networks in PyTorch.

The public names below are imported on first use (PEP 562 ``__getattr__``): ``import gcnet``
(and ``gcnet --help``) costs Python's start-up, not torch's and torchvision's;
``gcnet.create_model``, ``from gcnet import GlobalContextBlock`` and ``gcnet.models`` work as
before, importing what they need then.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> the subpackage that defines it
_LAZY = {
    "ContextModeling": "layers",
    "ContextTransform": "layers",
    "GlobalContextBlock": "layers",
    "NonLocalBlock": "layers",
    "SimplifiedNonLocalBlock": "layers",
    "SqueezeExcitation": "layers",
    "create_block": "layers",
    "list_blocks": "layers",
    "add_context_blocks": "models",
    "create_model": "models",
    "inserted_blocks": "models",
    "list_models": "models",
    "remove_context_blocks": "models",
    "save_pretrained": "hub",
    "load_pretrained_dir": "hub",
    "push_to_hub": "hub",
}

__all__ = [
    "ContextModeling",
    "ContextTransform",
    "GlobalContextBlock",
    "NonLocalBlock",
    "SimplifiedNonLocalBlock",
    "SqueezeExcitation",
    "__version__",
    "add_context_blocks",
    "create_block",
    "create_model",
    "inserted_blocks",
    "list_models",
    "list_blocks",
    "load_pretrained_dir",
    "push_to_hub",
    "remove_context_blocks",
    "save_pretrained",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its subpackage on first access (then cached here); a
    subpackage or module (``gcnet.models``, ``gcnet.config``) imported on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":  # the module exists, something it imports does not
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, the dunders and the subpackages imported so far (not the helpers)."""
    loaded = {n for n, v in globals().items() if isinstance(v, ModuleType) and v.__name__ == f"gcnet.{n}"}
    return sorted({*__all__, *loaded, *(n for n in globals() if n.startswith("__"))})


if TYPE_CHECKING:  # what type checkers and IDEs see: the eager imports
    from .hub import load_pretrained_dir, push_to_hub, save_pretrained
    from .layers import (
        ContextModeling,
        ContextTransform,
        GlobalContextBlock,
        NonLocalBlock,
        SimplifiedNonLocalBlock,
        SqueezeExcitation,
        create_block,
        list_blocks,
    )
    from .models import add_context_blocks, create_model, inserted_blocks, list_models, remove_context_blocks
