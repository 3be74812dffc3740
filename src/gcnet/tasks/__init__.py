"""The tasks: one module each (classification, segmentation, detection, video), each a
`Task` that the task-agnostic engine and CLI call.

``get_task(cfg["task"])`` is the only lookup; adding a task means a new module here and
one line in `TASKS` (see ``docs/architecture.md``).
"""

from __future__ import annotations

from gcnet.config_schema import register_task
from gcnet.errors import ConfigError

from .base import DemoSpec, Task
from .classification import ClassificationTask
from .detection import DetectionTask
from .segmentation import SegmentationTask
from .video import VideoTask

__all__ = ["TASKS", "DemoSpec", "Task", "get_task", "task_for_model", "task_of"]

#: every task by its config name (``task:`` in a recipe)
TASKS: dict[str, Task] = {
    t.name: t for t in (ClassificationTask(), SegmentationTask(), DetectionTask(), VideoTask())
}
for _task in TASKS.values():  # the config layer calls a task's checks by its name
    register_task(_task.name, _task.validate)


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a `ConfigError` listing the tasks."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"task must be one of {tuple(TASKS)}, got {name!r}") from None


def task_of(cfg) -> Task:
    """The task of a loaded config (or of an old checkpoint's, which may predate the key)."""
    return get_task(cfg.get("task", "classification"))


def task_for_model(model_name: str) -> Task:
    """The task whose models include ``model_name`` (classification for unknown names, whose
    error the model registry then gives)."""
    return next((t for t in TASKS.values() if t.owns_model(model_name)), TASKS["classification"])
