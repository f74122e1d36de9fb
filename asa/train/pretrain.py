"""Pretraining pieces every method shares: validation by the method's own loss and the encoder export (a
method's step and panels are its module's, `asa.methods`)."""
from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, default_collate

from asa.data.cohort import cohort_summary
from asa.data.cohort_list import write_cohort_list
from asa.io import SAFETENSORS_SUFFIX, load_checkpoint, save_checkpoint, save_export_safetensors
from asa.models import ENCODER_PREFIX

from .data import StopSafeLoader, close_loader, loader_workers, move_to
from .distributed import DistEnv
from .preemption import leave_stop_signals_to_the_trainer
from .rng import fork_rng, item_seed, seed_everything

__all__ = ["make_validator", "validation_groups", "export_encoder"]


def validation_groups(count: int, size: int) -> list[list[int]]:
    """Case indices 0..count-1 in fixed consecutive groups of ``size``; a remainder smaller than
    ``size`` joins the last group (so every group has at least ``size`` cases when count >= size)."""
    if size < 1:
        raise ValueError(f"validation group size must be >= 1, got {size}")
    groups = [list(range(i, min(i + size, count))) for i in range(0, count, size)]
    if len(groups) > 1 and len(groups[-1]) < size:
        groups[-2].extend(groups.pop())
    return groups


def _collate(samples: list) -> Mapping:
    """`default_collate` outside autocast: validation runs under it, and CPU autocast cannot stack
    the float16 crops of a store (which stay float16 until `move_to`)."""
    with torch.autocast("cpu", enabled=False):
        return default_collate(samples)


def make_validator(
    dataset: Dataset, *, step_fn: Callable[[nn.Module, Mapping], tuple[torch.Tensor, Mapping]], batch_size: int,
    env: DistEnv, num_workers: int = 0, group_size: int | None = None,
) -> Callable[[nn.Module], dict[str, float]]:
    """validate(model) -> {"loss": mean pretraining loss over the whole validation set}.

    Each rank takes every world_size-th case (group); sums and counts are all-reduced, so the value is the
    exact per-sample mean whatever the number of ranks. ``step_fn`` (the method's training step,
    `asa.methods.PretrainingMethod.step_of`) gives the loss of a batch.

    ``group_size``: for a loss that depends on which cases share a batch (SA-Swin's contrastive
    term takes its negatives from the batch, and is 0 for a single volume), the batches are the
    fixed groups of :func:`validation_groups` instead of ``batch_size`` chunks, and each group draws
    its random views from its own seed, so the value does not depend on ``batch_size``, the
    number of ranks or a one-volume tail batch.
    """
    if group_size is None:
        shard = list(range(env.rank, len(dataset), env.world_size))  # type: ignore[arg-type]
        chunks = [shard[i:i + batch_size] for i in range(0, len(shard), batch_size)]
    else:
        chunks = validation_groups(len(dataset), group_size)[env.rank::env.world_size]  # type: ignore[arg-type]

    def run(model: nn.Module, batch: Mapping, total: torch.Tensor) -> None:
        x = move_to(batch["image"], env.device)
        batch = {**batch, "image": x}
        if "region" in batch:
            batch["region"] = batch["region"].to(env.device)
        loss, _ = step_fn(model, batch)
        total[0] += loss.detach().double() * x.shape[0]  # summed on the device: one host sync per round
        total[1] += x.shape[0]

    # One loader for every round: its workers (when data.num_workers > 0) start once and stay, rather than start
    # and stop at each validation (on a GPU that took longer than the round's forward passes); the crops are not
    # random, so a worker's state carries nothing from one round to the next. Its own generator: starting an
    # iterator draws nothing from the caller's RNG, so the masks a round draws are the same at every round, after
    # a resume and for any number of workers.
    workers = loader_workers(num_workers)
    loader = StopSafeLoader(dataset, batch_sampler=chunks, num_workers=workers, collate_fn=_collate,
                            worker_init_fn=leave_stop_signals_to_the_trainer, persistent_workers=workers > 0,
                            pin_memory=env.device.type == "cuda", generator=torch.Generator().manual_seed(0))

    def validate(model: nn.Module) -> dict[str, float]:
        total = torch.zeros(2, dtype=torch.float64, device=env.device)
        if group_size is None:
            for batch in loader:
                run(model, batch, total)
        else:
            base = int(torch.randint(0, 2**31 - 1, ()))  # seeded by the caller (the engine's validation seed)
            with fork_rng():
                for g, batch in zip(range(env.rank, 1 << 62, env.world_size), loader):
                    seed_everything(item_seed(base, 0, g))  # group g sees the same views on any split
                    run(model, batch, total)
        if env.distributed and dist.is_initialized():
            dist.all_reduce(total)
        return {"loss": float(total[0] / total[1].clamp_min(1))}

    if workers > 0:  # the persistent workers end with the validator (the training job's end), not at exit
        weakref.finalize(validate, close_loader, loader)
    return validate


def export_encoder(checkpoint: str | os.PathLike, out: str | os.PathLike, prefixes: tuple[str, ...] = (ENCODER_PREFIX,),
                   *, cohort: Mapping | None = None) -> Path:
    """Write {"encoder": the weights under ``prefixes`` (ASA: the encoder module's ``encoder.*``;
    SA-Swin: ``swinViT.*``), "network": the pretraining network's spec, "source", "step"} taken from
    a training checkpoint, which must record its network spec. The same export is written beside
    ``out`` as ``<stem>.safetensors`` (no pickle; spec and provenance in its metadata,
    `asa.io.save_export_safetensors`). ``load_pretrained`` of `asa.models.ASASegmenter` /
    `asa.models.SASwin` and `asa.load_encoder` read either file. ``cohort``: the pretraining cohort's digests
    (`asa.data.cohort.export_cohort`), so that fine-tuning can check its held-out cases: its list goes beside
    ``out`` as ``cohort.json.gz`` (first, so no export names a list that is not there) and both files carry its
    summary as ``"cohort"`` (`asa.data.cohort.cohort_summary`: bounded at any cohort size)."""
    state = load_checkpoint(checkpoint)
    if not state.get("network"):
        raise ValueError(f"checkpoint {checkpoint}: records no network spec ('network': {{'arch', 'kwargs'}}); "
                         "an encoder export carries the spec of its pretraining network")
    weights = {k.removeprefix("module."): v for k, v in state["model"].items()}
    encoder = {k: v for k, v in weights.items() if k.startswith(prefixes)}
    if not encoder:
        raise ValueError(f"checkpoint {checkpoint}: no weights starting with {prefixes}")
    export = {"encoder": encoder, "network": state["network"], "source": str(Path(checkpoint).name),
              "step": int(state.get("step", 0))}
    if cohort is not None:
        write_cohort_list(Path(out).parent, cohort)
        export["cohort"] = cohort_summary(cohort)
    save_export_safetensors(Path(out).with_suffix(SAFETENSORS_SUFFIX), export)
    return save_checkpoint(out, export)
