"""What the loop reads of a config, as typed objects built once per run from the config dict
(the dict itself goes on to the task's hooks, which own their sections, and into the
checkpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from gcnet.config_schema import OptimConfig, OutputConfig, SchedConfig, TrainConfig

__all__ = ["EngineSettings"]


def _typed(schema: type, values: Mapping[str, Any]):
    """``schema(**values)`` for the keys the schema has (a checkpoint's config may predate some:
    those take their defaults)."""
    names = {f.name for f in fields(schema)}
    return schema(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class EngineSettings:
    """The loop's view of a config: the model and dataset names (for messages and the saved
    weights' metadata), the loader's workers, and the ``train``, ``optim``, ``sched`` and
    ``output`` sections as their dataclasses."""

    model_name: str
    dataset: str
    num_workers: int
    train: TrainConfig
    optim: OptimConfig
    sched: SchedConfig
    output: OutputConfig

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> EngineSettings:
        return cls(
            model_name=cfg["model"]["name"],
            dataset=cfg["data"]["dataset"],
            num_workers=int(cfg["data"]["num_workers"]),
            train=_typed(TrainConfig, cfg["train"]),
            optim=_typed(OptimConfig, cfg["optim"]),
            sched=_typed(SchedConfig, cfg["sched"]),
            output=_typed(OutputConfig, cfg["output"]),
        )
