"""Fine-tuning as a Python function: the job behind `asa-finetune`, which runs the training of the
fine-tuning task that claims ``data.task`` (`asa.api.tasks.FinetuneTask.finetune`: one skeleton, the
task's hooks); `finetune_fused`: several such runs that share their data, trained as one."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

from omegaconf import DictConfig

from asa.api.configuration.checks import as_config
from asa.api.machinery.run import OptionError, refusing
from asa.api.configuration.schema import FinetuneConfig
from asa.api.tasks import finetune_task
from asa.train import FitResult
from asa.train.fused import FusedEngine

__all__ = ["finetune", "finetune_fused"]


def finetune(config: FinetuneConfig | DictConfig) -> FitResult:
    """Fine-tune as configured (asa-finetune); returns the engine's FitResult (rank 0 writes every file).

    ``config``: the typed config (FinetuneConfig, e.g. from ``load_config("finetune")``) or a composed
    Hydra config; it is checked against the schema first (its ``task`` section against the task's settings)."""
    with refusing():  # a key the schema does not know (e.g. added with +key=value): refused
        cfg = as_config(config, "finetune")
        task = finetune_task(cfg.data.task)
    return task.finetune(cfg)


def finetune_fused(configs: Sequence[FinetuneConfig | DictConfig]) -> list[FitResult]:
    """Fine-tune the runs ``configs`` as one (`asa.train.fused.FusedEngine`): each run's folder, checkpoints, logs
    and closing report are those its own asa-finetune writes, its numbers those to float rounding. The runs share
    their seed, training and validation cases, data, task and trainer settings (refused otherwise), and differ in
    their starting weights and learning rates (e.g. ``model.pretrained``); the first run's loader, loss and
    validation serve them all (each validation round one pass for every run, `asa.models.units.Units`).
    Returns each run's FitResult, in order."""
    with contextlib.ExitStack() as stack:
        ready = []
        for config in configs:
            with refusing():
                cfg = as_config(config, "finetune")
                task = finetune_task(cfg.data.task)
            ready.append(stack.enter_context(task.prepared(cfg)))
        lead = ready[0]
        for other in ready[1:]:
            if (fault := _data_fault(lead.run, other.run)) is not None:
                raise OptionError(fault)
        with refusing():
            engine = lead.engine(FusedEngine, peers=[r.engine() for r in ready[1:]])
        results = engine.results(engine.fit(lead.train_data))
        return [r.ended(result) for r, result in zip(ready, results)]


def _data_fault(lead, other) -> str | None:
    """Why ``other``'s run cannot take ``lead``'s batches, loss and validation (its seed, data or task settings or
    split differ), or None."""
    if other.cfg.seed != lead.cfg.seed:
        return f"{other.out_dir}: seed={other.cfg.seed}, {lead.out_dir}: seed={lead.cfg.seed}; fused runs share it"
    for section in ("data", "task"):  # the lead's loader, loss and validation are every unit's
        ours, theirs = lead.resolved[section], other.resolved[section]
        if differ := sorted(k for k in {*ours, *theirs} if ours.get(k) != theirs.get(k)):
            return (f"{other.out_dir}: {section}.{f', {section}.'.join(differ)} differ from {lead.out_dir}'s; fused "
                    "runs share them")
    splits = [json.loads((r.out_dir / "splits.json").read_text()) for r in (lead, other)]
    for part in ("train", "val"):
        if splits[0].get(part) != splits[1].get(part):
            return f"{other.out_dir}: its {part} cases differ from {lead.out_dir}'s; fused runs share them"
    return None
