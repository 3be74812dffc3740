"""One config system: nested dicts of defaults, YAML recipes on top, dotted overrides last.

    cfg = load_config("configs/demo_synthetic.yaml", ["optim.lr=0.05", "train.epochs=3"])

Every key of a recipe or override must exist in `DEFAULTS` (except the free-form
``model.kwargs``); an unknown key is an error that suggests the nearest valid key. The
defaults are assembled from the typed sections registered in `gcnet.config_schema`:
the core ones, and each task's own beside its code. This module imports no task.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from gcnet.config_schema import (
    check_choice,
    check_ranges,
    check_sections,
    check_task,
    check_types,
    default_config,
    free_form_keys,
)
from gcnet.errors import ConfigError

__all__ = [  # noqa: F822  (DEFAULTS: assembled on first use, see __getattr__)
    "DEFAULTS",
    "ConfigError",
    "fill_defaults",
    "find_recipe",
    "list_recipes",
    "load_config",
    "merge",
    "parse_override",
    "flatten",
    "validate",
]


def __getattr__(name: str) -> Any:
    """``DEFAULTS``: every registered section's defaults (`gcnet.config_schema`),
    assembled on first use (PEP 562)."""
    if name == "DEFAULTS":
        global _DEFAULTS
        if _DEFAULTS is None:
            _DEFAULTS = default_config()
        return _DEFAULTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_DEFAULTS: dict[str, Any] | None = None


def _defaults() -> dict[str, Any]:
    return __getattr__("DEFAULTS")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in free_form_keys() and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _suggest(key: str) -> str:
    valid = list(flatten(_defaults()))
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not near:  # maybe only the last part is misspelt or misplaced
        leaf = key.rsplit(".", 1)[-1]
        near = [v for v in valid if v.rsplit(".", 1)[-1] == leaf][:1]
    return f" (did you mean {near[0]!r}?)" if near else ""


def merge(base: dict[str, Any], update: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``; unknown keys raise."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        key = f"{prefix}{k}"
        if k not in out:
            full = f"{key}.{next(iter(flatten(v)))}" if isinstance(v, Mapping) and v else key
            raise ConfigError(f"unknown config key {full!r}{_suggest(full)}")
        if key in free_form_keys():
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key} must be a mapping, got {v!r}")
            out[k] = {**out[k], **v}
        elif isinstance(out[k], dict):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key} is a section; got the value {v!r}")
            out[k] = merge(out[k], v, key + ".")
        else:
            out[k] = v
    return out


def fill_defaults(cfg: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``cfg`` with every key it lacks taken from `DEFAULTS`: the config of a
    checkpoint written before a key existed reads as it trained (the default is the behaviour
    the key was added with)."""
    defaults = _defaults() if defaults is None else defaults
    out = copy.deepcopy(dict(cfg))
    for k, v in defaults.items():
        if k not in out:
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out[k], Mapping) and v:
            out[k] = fill_defaults(out[k], v)
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``"optim.lr=0.05"`` -> ``{"optim": {"lr": 0.05}}`` (the value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override must look like key.path=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse the value of {key!r}: {e}") from None
    parts = key.split(".")
    # model.kwargs.ratio=0.25 -> a free-form entry
    for free in free_form_keys():
        fparts = free.split(".")
        if parts[: len(fparts)] == fparts and len(parts) > len(fparts):
            inner: Any = value
            for p in reversed(parts[len(fparts) :]):
                inner = {p: inner}
            value, parts = inner, fparts
            break
    out: Any = value
    for p in reversed(parts):
        out = {p: out}
    return out


RECIPES = os.path.join(os.path.dirname(__file__), "recipes")


def list_recipes() -> list[str]:
    """The recipes shipped in the package (``configs/`` in a checkout is the same folder)."""
    return sorted(f for f in os.listdir(RECIPES) if f.endswith(".yaml"))


def find_recipe(path: str | os.PathLike) -> str:
    """``path`` if it is a file, else a packaged recipe of that name (``.yaml`` optional), so
    ``-c demo_segmentation.yaml`` works from any folder."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    name = os.path.basename(path)
    for candidate in (name, name + ".yaml"):
        if os.path.isfile(os.path.join(RECIPES, candidate)):
            return os.path.join(RECIPES, candidate)
    raise FileNotFoundError(
        f"config file not found: {path} (nor a packaged recipe of that name: {', '.join(list_recipes())})"
    )


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Defaults <- ``base`` <- YAML file at ``path`` <- dotted ``overrides``, validated
    (``check=False``: not yet, for a caller that merges more sources first and then calls
    `validate` once)."""
    cfg = copy.deepcopy(_defaults())
    if base:
        cfg = merge(cfg, base)
    if path is not None:
        path = find_recipe(path)
        with open(path) as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        data = dict(data)
        data.pop("_base_", None)
        cfg = merge(cfg, data)
    for item in overrides:
        cfg = merge(cfg, parse_override(item))
    if check:
        validate(cfg)
    return cfg


def validate(cfg: Mapping[str, Any]) -> None:
    """Check a merged config (types, ranges, each section's combinations, the task's own
    checks); raise `ConfigError` naming the key, the value and what is allowed."""
    flat = flatten(cfg)
    check_types(flat)
    check_ranges(flat)
    check_sections(cfg)
    check_task(cfg)
    _check_external_model(cfg["model"])
    check_choice(cfg, "optim.name", ("sgd", "adamw"))
    check_choice(cfg, "sched.name", ("cosine", "step", "poly", "constant"))
    check_choice(cfg, "train.amp", ("none", "bf16", "fp16"))
    check_choice(cfg, "data.verify_images", ("quick", "full", "off", False, True))
    check_choice(cfg, "train.device", ("auto", "cpu", "cuda"))


def _check_external_model(m: Mapping[str, Any]) -> None:
    """``model.context`` (keys, block name and arguments) and a ``tv:`` / ``timm:`` name."""
    from gcnet.models.external import check_external_name, is_external
    from gcnet.models.plugins import check_context_config

    try:
        check_context_config(m.get("context", {}))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if is_external(m["name"]):
        try:
            check_external_name(m["name"])
        except ValueError as e:
            raise ConfigError(f"model.name: {e}") from None
