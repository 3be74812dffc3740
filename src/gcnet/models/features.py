"""timm's feature-extraction conventions for gcnet's backbones (our own small code).

- `FeatureInfo`: what each feature map of a backbone is (``num_chs``, ``reduction``
  = output stride, ``module`` = the module whose output it is), with timm's accessors
  (``channels()``, ``reduction()``, ``module_name()``, ``get_dicts()``) over the maps a
  model returns (``out_indices``).
- `take_indices`: timm's ``indices`` argument (``None``: all, an int n: the last n, a
  sequence: those, negatives counted from the end) as absolute indices.
- `checkpoint_blocks`: run a stage's residual blocks one by one under
  `torch.utils.checkpoint.checkpoint` (non-reentrant).
- `to_features_only`: turn a backbone into its ``features_only`` form in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["FeatureInfo", "checkpoint_blocks", "take_indices", "to_features_only"]

Indices = int | Sequence[int] | None


def take_indices(num_features: int, indices: Indices = None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: (absolute indices to take, the largest of them)."""
    if indices is None:
        indices = num_features
    if isinstance(indices, bool):
        raise TypeError(f"indices must be None, an int or a sequence of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n indices ({indices}) out of range (1 to {num_features})")
        taken = list(range(num_features - indices, num_features))
    else:
        taken = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {i} is out of range (0 to {num_features - 1})")
            taken.append(idx)
        if not taken:
            raise ValueError("indices must not be empty")
    return taken, max(taken)


class FeatureInfo:
    """The feature maps of a backbone: ``info`` (one dict per map: ``num_chs``, ``reduction``,
    ``module``, ``index``) and the ``out_indices`` a model returns.

    ``get(key, idx)`` / ``channels(idx)`` / ``reduction(idx)`` / ``module_name(idx)`` /
    ``get_dicts(keys, idx)``: ``idx=None`` gives one value per output index, an int the value
    of that map, a list / tuple one value per map named. ``info[i]``, ``len`` and iteration
    go over all maps (timm's plain models keep ``feature_info`` as that list of dicts).
    """

    def __init__(self, info: Iterable[dict[str, Any]], out_indices: Indices = None) -> None:
        self.info = [dict(d) for d in info]
        previous = 1
        for i, d in enumerate(self.info):
            if d.get("num_chs", 0) <= 0 or d.get("reduction", 0) < previous or "module" not in d:
                raise ValueError(f"feature info {i} needs num_chs > 0, a non-decreasing reduction "
                                 f"and a module name, got {d}")  # fmt: skip
            previous = d["reduction"]
            d.setdefault("index", i)
        self.out_indices = tuple(take_indices(len(self.info), out_indices)[0])

    def from_other(self, out_indices: Indices) -> FeatureInfo:
        """The same maps, another selection."""
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        def pick(i: int) -> dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info}, out_indices={self.out_indices})"


def checkpoint_blocks(blocks: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``blocks(x)`` (an ``nn.Sequential``), each block under a non-reentrant activation
    checkpoint: only the blocks' inputs are kept for backward, the rest is recomputed."""
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False)
    return x


def to_features_only(model: nn.Module, out_indices: Indices = None) -> nn.Module:
    """``model`` (a backbone with ``feature_info`` and ``prune_intermediate_layers``, e.g.
    `ResNet`) in place as timm's ``features_only`` model: its
    forward returns the list of maps at ``out_indices`` (default all), the stages past the
    last one and the classifier are dropped (no state-dict key of a kept module changes),
    and ``feature_info`` describes the returned maps."""
    if not hasattr(model, "prune_intermediate_layers") or not isinstance(
        getattr(model, "feature_info", None), FeatureInfo
    ):
        raise ValueError(f"{type(model).__name__} has no features_only form (no feature_info)")
    taken = model.prune_intermediate_layers(out_indices, prune_head=True)
    model.feature_info = model.feature_info.from_other(taken)
    model.features_only = True
    return model
