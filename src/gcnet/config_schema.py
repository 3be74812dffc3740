"""The config's schema: typed sections, each a dataclass registered by the code that owns it,
and the checks of types, ranges and combinations that make a bad value one named error before
any data is read or any file is written.

The core sections (``task``, ``model``, ``data``, ``optim``, ``sched``, ``train``,
``output``) are declared here; each task declares its own (``data.video``, ``data.seg``,
``eval``, ``data.augment``, the COCO paths under ``data``) beside its code with
`register_section`, and its checks of a config that names it with
`register_task`. Nothing here imports a task: the first use of the registry imports the
modules named in `SECTION_LOCATIONS` (as mmengine's registries import their
``locations``), whose import registers what they own. The defaults
(`gcnet.config.DEFAULTS`) are assembled from the registered sections.

A key's allowed types come from its field's annotation (``str | None``: a string or null;
``float``: any number), its range from the field's metadata (`bounded`). Every error
names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gcnet.errors import ConfigError

__all__ = [
    "SECTION_LOCATIONS",
    "Section",
    "bounded",
    "check_choice",
    "check_ranges",
    "check_sections",
    "check_task",
    "check_types",
    "default_config",
    "free_form_keys",
    "register_section",
    "register_task",
    "task_names",
]

NUMBER, INT, BOOL, STR, LIST, MAPPING, NONE = (
    "number",
    "integer",
    "boolean",
    "string",
    "list",
    "mapping",
    "null",
)

#: modules whose import registers the sections and tasks beyond the core ones
SECTION_LOCATIONS: list[str] = ["gcnet.tasks"]


def bounded(default: Any, lo: float | None = None, hi: float | None = None, lo_in: bool = True,
            hi_in: bool = True, **kw: Any) -> Any:  # fmt: skip
    """A dataclass field whose numbers must lie between ``lo`` and ``hi`` (``None``:
    unbounded; ``lo_in`` / ``hi_in``: the bound itself allowed)."""
    return field(default=default, metadata={"range": (lo, hi, lo_in, hi_in)}, **kw)


def free_form(**kw: Any) -> Any:
    """A mapping field whose keys are not checked (``model.kwargs``)."""
    return field(default_factory=dict, metadata={"free_form": True}, **kw)


@dataclass(frozen=True)
class Section:
    """A config section: the dotted ``path`` of a mapping (``""``: the top level), its typed
    fields (``schema``, a dataclass; fields of sections registered at the same path are
    merged), who owns it (``"core"`` or a task name) and an optional ``check(cfg)`` of
    combinations of its values, run on every config."""

    path: str
    schema: type
    owner: str = "core"
    check: Callable[[Mapping[str, Any]], None] | None = None


_SECTIONS: list[Section] = []
_TASKS: dict[str, Callable[[Mapping[str, Any]], None]] = {}
_loaded = False


def register_section(path: str, schema: type, owner: str = "core",
                     check: Callable[[Mapping[str, Any]], None] | None = None) -> type:  # fmt: skip
    """Add ``schema`` (a dataclass) at ``path``; returns ``schema`` (usable as a decorator's
    body). Registering the same (path, schema) twice is a no-op."""
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"register_section({path!r}): {schema!r} is not a dataclass")
    sec = Section(path, schema, owner, check)
    if not any(s.path == path and s.schema is schema for s in _SECTIONS):
        _SECTIONS.append(sec)
    return schema


def register_task(name: str, validate: Callable[[Mapping[str, Any]], None]) -> None:
    """The checks of a config whose ``task`` is ``name`` (its dataset choices, its keys)."""
    _TASKS[name] = validate


def _registry() -> list[Section]:
    global _loaded
    if not _loaded:
        _loaded = True
        for location in SECTION_LOCATIONS:
            importlib.import_module(location)
    return _SECTIONS


def task_names() -> tuple[str, ...]:
    _registry()
    return tuple(_TASKS)


def check_task(cfg: Mapping[str, Any]) -> None:
    """``task`` names a registered task; that task's checks of the config."""
    _registry()
    name = cfg.get("task")
    if not isinstance(name, str) or name not in _TASKS:
        raise ConfigError(f"task must be one of {tuple(_TASKS)}, got {name!r}")
    _TASKS[name](cfg)


# -- defaults, types and ranges from the sections --------------------------------------------
def _fields(schema: type, prefix: str):
    """(dotted key, field, resolved type) of a dataclass, nested dataclasses flattened."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _fields(hint, key + ".")
        else:
            yield key, f, hint


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _as_dict(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        out[f.name] = _as_dict(hint) if dataclasses.is_dataclass(hint) else _plain(_default(f))
    return out


def _plain(value: Any) -> Any:
    """Defaults as YAML has them: tuples as lists."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def default_config() -> dict[str, Any]:
    """Every registered section's defaults, one nested dict (a fresh copy each call)."""
    out: dict[str, Any] = {}
    for sec in _registry():
        node = out
        for part in [p for p in sec.path.split(".") if p]:
            node = node.setdefault(part, {})
        node.update(_as_dict(sec.schema))
    return out


def _kinds(hint: Any) -> tuple[str, ...]:
    """The kinds of values a field's annotation allows."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(k for arg in typing.get_args(hint) for k in _kinds(arg))
    if hint is type(None):
        return (NONE,)
    if hint is Any:
        return ()
    base = origin or hint
    if base is bool:
        return (BOOL,)
    if base is int:
        return (INT,)
    if base is float:
        return (NUMBER,)
    if base is str:
        return (STR,)
    if base in (list, tuple):
        return (LIST,)
    if base in (dict, Mapping):
        return (MAPPING,)
    return ()


def _numbers_list(hint: Any) -> bool:
    """``list[float]`` / ``list[int]`` (or with ``| None``)."""
    for arg in (
        typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    ):
        if typing.get_origin(arg) in (list, tuple) and all(a in (int, float) for a in typing.get_args(arg)):
            return True
    return False


_SPECS_CACHE: dict[tuple, tuple[dict, tuple[str, ...]]] = {}


def _specs_and_free() -> tuple[dict[str, tuple[tuple[str, ...], Any, dataclasses.Field]], tuple[str, ...]]:
    """(every key's allowed kinds, annotation and field; the free-form keys), resolved once per
    state of the registry (``typing.get_type_hints`` costs ~1 ms a section; a config's
    validation asks a dozen times)."""
    sections = _registry()
    key = tuple((sec.path, id(sec.schema)) for sec in sections)
    if key not in _SPECS_CACHE:
        out = {}
        for sec in sections:
            prefix = f"{sec.path}." if sec.path else ""
            for name, f, hint in _fields(sec.schema, prefix):
                out[name] = (_kinds(hint), hint, f)
        free = tuple(k for k, (_, _, f) in out.items() if f.metadata.get("free_form"))
        _SPECS_CACHE.clear()
        _SPECS_CACHE[key] = (out, free)
    return _SPECS_CACHE[key]


def _specs() -> dict[str, tuple[tuple[str, ...], Any, dataclasses.Field]]:
    return _specs_and_free()[0]


def free_form_keys() -> tuple[str, ...]:
    """The keys whose mappings are not checked key by key (``model.kwargs``, ``model.context``)."""
    return _specs_and_free()[1]


_ARTICLE = {NUMBER: "a number", INT: "an integer", BOOL: "true or false", STR: "a string", LIST: "a list",
            MAPPING: "a mapping", NONE: "null"}  # fmt: skip


def check_choice(cfg: Mapping[str, Any], key: str, choices) -> None:
    """Raise `ConfigError` unless the dotted ``key`` of ``cfg`` is one of ``choices``."""
    value: Any = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value not in choices:
        raise ConfigError(f"{key} must be one of {tuple(choices)}, got {value!r}")


def _kind(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return STR
    if isinstance(value, list | tuple):
        return LIST
    if isinstance(value, Mapping):
        return MAPPING
    return type(value).__name__


def _fits(value: Any, allowed: tuple[str, ...]) -> bool:
    kind = _kind(value)
    return not allowed or kind in allowed or (kind == INT and NUMBER in allowed)


def check_types(flat: Mapping[str, Any]) -> None:
    """Every value of the flattened config has its field's type."""
    for key, (allowed, hint, _) in _specs().items():
        if key not in flat:
            raise ConfigError(f"the config has no key {key} (written before it existed? "
                              "gcnet.config.fill_defaults adds the defaults)")  # fmt: skip
        value = flat[key]
        if not _fits(value, allowed):
            names = " or ".join(_ARTICLE.get(a, a) for a in allowed)
            raise ConfigError(f"{key} must be {names}, got {value!r}")
        if _kind(value) == LIST and _numbers_list(hint):
            if [v for v in value if _kind(v) not in (INT, NUMBER)]:
                raise ConfigError(f"{key} must be a list of numbers, got {value!r}")


def check_ranges(flat: Mapping[str, Any]) -> None:
    """Every number lies in its field's range (`bounded`)."""
    for key, (_, _, f) in _specs().items():
        if "range" not in f.metadata:
            continue
        lo, hi, lo_in, hi_in = f.metadata["range"]
        value = flat.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        ok = (lo is None or value > lo or (lo_in and value == lo)) and (
            hi is None or value < hi or (hi_in and value == hi)
        )
        if not ok:
            if hi is None and lo == 1 and isinstance(value, int):
                want = "a positive integer"
            elif hi is None:
                want = f"{'>=' if lo_in else '>'} {lo}"
            else:
                want = f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"
            raise ConfigError(f"{key} must be {want}, got {value!r}")


def check_sections(cfg: Mapping[str, Any]) -> None:
    """Each section's own check of combinations of its values, every section on every config
    (a key of another task's section is still checked)."""
    for sec in _registry():
        if sec.check is not None:
            sec.check(cfg)


def pair_of_positive_ints(key: str, value: Any) -> None:
    """``[h, w]`` of positive integers (or null)."""
    if value is not None and (len(value) != 2 or any(not isinstance(v, int) or v < 1 for v in value)):
        raise ConfigError(f"{key} must be two positive integers [h, w], got {value!r}")


# -- the core sections -------------------------------------------------------------------------
@dataclass
class RootConfig:
    task: str = "classification"  # a registered task (gcnet.tasks.TASKS)


@dataclass
class ModelConfig:
    name: str = "gc_resnet18"
    pretrained: bool | str = False  # False | "torchvision" | path
    kwargs: dict[str, Any] = free_form()  # free-form overrides for gcnet.create_model
    # free-form: context blocks put into any model (tv:NAME / timm:NAME included) by
    # gcnet.add_context_blocks, e.g. {block: gc, after: "preset:resnet:after_1x1:c3-c5",
    # ratio: 0.0625}; {} = none
    context: dict[str, Any] = free_form()


@dataclass
class DataConfig:
    # classification: synthetic | imagefolder | cifar10 | cifar100
    # segmentation: synthetic | far_key | cityscapes | voc | ade20k | custom; detection: synthetic | coco
    # video: synthetic_video | video_list | video_folder | kinetics | rawframes
    dataset: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    download: bool = False
    image_size: int = bounded(48, 8)
    train_size: int = bounded(3000, 1)  # synthetic only
    val_size: int = bounded(600, 1)  # synthetic only
    seed: int = 0  # synthetic only
    num_workers: int = bounded(2, 0)
    skip_bad_images: bool = False
    # imagefolder: check every image before training (quick: headers + JPEGs at 1/8 scale;
    # full: a whole decode; off): bad files stop the run up front, or are skipped, counted
    verify_images: str | bool = "quick"  # YAML reads a bare off as false
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


def _check_data(cfg: Mapping[str, Any]) -> None:
    d = cfg["data"]
    for key in ("mean", "std"):
        if len(d[key]) != 3:
            raise ConfigError(f"data.{key} must hold 3 numbers (R, G, B), got {d[key]!r}")
    if any(v <= 0 for v in d["std"]):
        raise ConfigError(f"data.std must be positive, got {d['std']!r}")


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = bounded(0.1, 0, lo_in=False)  # for the reference batch size below (linear scaling rule)
    ref_batch_size: int = bounded(256, 1)
    momentum: float = bounded(0.9, 0, 1, hi_in=False)
    nesterov: bool = False
    weight_decay: float = bounded(1e-4, 0)
    no_decay_norm_bias: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class SchedConfig:
    name: str = "cosine"  # cosine | step | poly | constant
    warmup_epochs: float = bounded(0.0, 0)
    warmup_iters: int = bounded(0, 0)  # if > 0, overrides warmup_epochs (detection: 500)
    warmup_factor: float = bounded(0.1, 0, 1, lo_in=False)
    milestones: list[float] = field(default_factory=list)  # epochs, for step
    gamma: float = bounded(0.1, 0, lo_in=False)
    min_lr: float = bounded(0.0, 0)
    power: float = bounded(0.9, 0, lo_in=False)  # poly


@dataclass
class TrainConfig:
    epochs: int = bounded(5, 1)
    max_iters: int | None = bounded(None, 1)  # iteration budget (segmentation recipes); overrides epochs
    batch_size: int = bounded(64, 1)  # global batch (split across DDP ranks)
    label_smoothing: float = bounded(0.0, 0, 1, hi_in=False)
    aux_loss_weight: float = bounded(0.4, 0)  # segmentation auxiliary head
    clip_grad: float | None = bounded(None, 0)  # 0 / null: off
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    ema: bool = False
    ema_decay: float = bounded(0.999, 0, 1, lo_in=False, hi_in=False)
    sync_bn: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    eval_every: int = bounded(1, 1)
    checkpoint_every_epochs: int = bounded(1, 1)  # write last.pth after every N-th epoch (and the last)
    checkpoint_every: int | None = bounded(None, 1)  # also write last.pth every N steps inside an epoch
    checkpoint_every_minutes: float | None = bounded(None, 0, lo_in=False)  # ... and / or every M minutes
    skip_nonfinite_steps: int = bounded(
        0, 0
    )  # skip up to N steps with a non-finite loss (0: stop at the first)


@dataclass
class OutputConfig:
    dir: str = "runs/default"
    tensorboard: bool = False
    plot: bool = True


for _path, _schema, _check in (("", RootConfig, None), ("model", ModelConfig, None),
                               ("data", DataConfig, _check_data), ("optim", OptimConfig, None),
                               ("sched", SchedConfig, None), ("train", TrainConfig, None),
                               ("output", OutputConfig, None)):  # fmt: skip
    register_section(_path, _schema, "core", _check)
