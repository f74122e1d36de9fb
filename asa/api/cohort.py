"""Was an evaluation case in the pretraining cohort? The job behind ``asa-cohort PRETRAIN_RUN FINETUNE_RUN``
(the records and checks it shares with the training jobs: `asa.api.machinery.cohort`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from asa.api.machinery.cohort import check_run_kinds, pretraining_cohort, run_cases, run_folder
from asa.data.overlap import cohort_overlap, describe_overlap

__all__ = ["check_cohort"]


def check_cohort(pretrain_run: str | os.PathLike, finetune_run: str | os.PathLike, *,
                 subsets: Sequence[str] = ("val", "test"), workers: int = 4) -> dict[str, Any]:
    """Which of ``subsets`` of the fine-tuning run's split were in the pretraining run's cohort (its train and val
    parts): ``{"pretraining": run, "finetuning": run, "cohort_size", "subsets": {name: overlap}, "lines"}``, the
    overlap as `asa.data.overlap.cohort_overlap` gives it, ``lines`` the report. A fine-tuning run given as
    ``pretrain_run`` or a pretraining run as ``finetune_run`` is refused (`check_run_kinds`) before any image is read."""
    check_run_kinds(pretrain_run, finetune_run)
    cohort = pretraining_cohort(pretrain_run, workers=workers)
    cases, splits, _ = run_cases(finetune_run)
    by_id = {c.id: c for c in cases}
    unknown = [s for s in subsets if s not in splits]
    if unknown:
        raise ValueError(f"{run_folder(finetune_run) / 'splits.json'} has no subset {', '.join(unknown)} "
                         f"(subsets: {', '.join(sorted(splits))})")
    overlap = cohort_overlap(cohort, {s: [by_id[i] for i in splits[s]] for s in subsets}, workers=workers)
    seen = sum(1 for v in cohort["cases"].values() if v.get("part") in cohort.get("seen_parts", ()))
    lines = describe_overlap(overlap, cohort_size=seen)
    return {"pretraining": str(run_folder(pretrain_run)), "finetuning": str(run_folder(finetune_run)),
            "cohort_size": seen, "subsets": overlap, "lines": lines}
