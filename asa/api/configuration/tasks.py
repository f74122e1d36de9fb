"""The fine-tuning tasks by name (`asa.api.tasks`), on the config floor: the schema types a task's ``task`` section
by the task that claims ``data.task``, so the table, the settings base and the lookups live here, importing nothing
of asa's jobs (a task's class, which does, is registered into it from above)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from asa.plugins import Plugins

__all__ = ["ENTRY_POINT_GROUP", "FINETUNE_TASKS", "TaskSettings", "add_task", "registered_tasks", "task_class"]

ENTRY_POINT_GROUP = "asa.finetune_tasks"
JOBS = ("claims", "finetune", "predict", "evaluate", "probe_targets")


@dataclass
class TaskSettings:
    """The ``task`` section of ``asa-finetune``: the settings of the fine-tuning task that claims
    ``data.task`` (`asa.api.tasks`). A task's own settings subclass this, and their defaults are the
    task's defaults (stated nowhere else); ``name`` is the task's."""

    name: str = MISSING


FINETUNE_TASKS = Plugins("fine-tuning task", ENTRY_POINT_GROUP)  # name -> FinetuneTask subclass


def add_task(cls: Any) -> Any:
    """Add the task class ``cls`` under ``cls.name`` after checking what every task has: a name, the four jobs
    and `claims`, and a ``Settings`` subclassing `TaskSettings` (`asa.api.tasks.register_finetune_task`
    also checks that it subclasses ``FinetuneTask``; an entry point is checked here)."""
    if not isinstance(cls, type) or not isinstance(getattr(cls, "name", None), str):
        raise TypeError(f"{cls!r}: a fine-tuning task is a class that names itself (name)")
    if missing := [job for job in JOBS if not callable(getattr(cls, job, None))]:
        raise TypeError(f"fine-tuning task {cls.name}: no {', '.join(missing)} (subclass asa.api.tasks.FinetuneTask)")
    if not (isinstance(getattr(cls, "Settings", None), type) and issubclass(cls.Settings, TaskSettings)):
        raise TypeError(f"fine-tuning task {cls.name}: Settings must subclass asa.api.tasks.TaskSettings")
    return FINETUNE_TASKS.add(cls.name, cls)


def registered_tasks() -> dict[str, Any]:
    """Every registered task by name, entry points included."""
    return dict(FINETUNE_TASKS.installed(add_task))


def task_class(data_task: str, *, option: str = "data.task") -> Any:
    """The registered task class that claims ``data_task``; the ones registered last are asked first, so
    a plug-in may claim a name before the built-in ones. No task claiming it: ``ValueError`` naming
    ``option`` and the tasks known."""
    for cls in reversed(list(registered_tasks().values())):
        if cls.claims(str(data_task)):
            return cls
    takes = [f"{cls.name} takes {', '.join(cls.data_tasks)}" if getattr(cls, "data_tasks", ()) else cls.name
             for cls in registered_tasks().values()]
    raise ValueError(f"{option}={data_task}: no fine-tuning task takes it (registered: {'; '.join(takes)})")
