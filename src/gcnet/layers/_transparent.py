"""A wrapper module without a level of its own in the state dict (`TransparentWrapper`)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

__all__ = ["TransparentWrapper"]


class TransparentWrapper(nn.Module):
    """Wraps the child named `_inner` so that it looks unwrapped from outside.

    ``state_dict`` / ``load_state_dict`` keep the inner module's keys at the wrapper's own name
    (no ``<_inner>.`` level); the children named in `_extras` keep theirs under their own
    names. Attributes the wrapper does not have are looked up on the inner module.
    """

    _inner: str = "module"
    _extras: tuple[str, ...] = ()

    def state_dict(self, *args: Any, destination=None, prefix: str = "", keep_vars: bool = False):
        if args:  # torch's deprecated positional form: (destination, prefix, keep_vars)
            destination, prefix, keep_vars = (list(args) + [destination, prefix, keep_vars][len(args) :])[:3]
        if destination is None:
            destination = OrderedDict()
            destination._metadata = OrderedDict()  # type: ignore[attr-defined]
        self._modules[self._inner].state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        for name in self._extras:
            self._modules[name].state_dict(
                destination=destination, prefix=f"{prefix}{name}.", keep_vars=keep_vars
            )
        return destination

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:  # fmt: skip
        # the inner module's keys sit at the wrapper's name: move them under "<_inner>." for the
        # children's loaders (state_dict is this wrapper's own filtered copy)
        own = tuple(f"{prefix}{name}." for name in (self._inner, *self._extras))
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(own)]:
            state_dict[own[0] + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name.startswith("__") or not modules or self._inner not in modules:
                raise
            return getattr(modules[self._inner], name)
