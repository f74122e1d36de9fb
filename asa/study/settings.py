"""The settings of one ``asa-study`` call, parsed once (`Study.from_args`): nothing below `main` reads argv."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from asa.study.arms import ARMS, check
from asa.study.common import refuse, scale_from_args, usable_cores
from asa.study.runs import SCALES, Network, Scale, parse_network, units_at_once


@dataclasses.dataclass(frozen=True)
class Study:
    """What ``asa-study`` was asked (its options, paths absolute; `asa.study.study.build_parser` says each)."""

    data: str
    root: Path
    out: Path
    scale_name: str
    scale: Scale
    network: Network
    arms: tuple[str, ...]
    encoders: tuple[tuple[str, str], ...]  # --encoder NAME=FILE, the file's absolute path
    pretrain_data: Path | None = None
    pretrain_channels: str | None = None
    probe_first: bool = False
    recipe: str = "adamw"
    encoder_lr_scale: float = 1.0
    budget_cap: int | None = None
    head_start: int | None = None  # a shorter budget every fine-tuning run is also scored at
    accept_overlap: bool = False
    accept_unlearned: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    memory_gib: float | None = None  # the GPU's memory the units share (None: they run on the CPU)
    fused: bool = False  # each draw's fine-tuning runs trained as one unit (asa.cli.fused)
    n_boot: int = 10000
    min_effect: float = 0.01
    looks: int = 1  # the looks at the scores the design plans (asa.study.design)
    lesion_classes: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    dry_run: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, encoders: dict[str, str]) -> Study:
        """The settings of a parsed command line (``encoders``: its checked --encoder arms); a value out of range is
        refused here, before anything is read or written. Units at once × torch threads per unit ≤ the cores."""
        name, scale = scale_from_args(args, SCALES)
        scale.check()
        check(args.arms)
        for option, value in (("--threads", args.threads), ("--n-boot", args.n_boot), ("--looks", args.looks)):
            if value is not None and value < 1:
                refuse(f"{option} {value}: expected at least 1")
        gpu = args.device != "cpu" and torch.cuda.is_available()
        if name == "gpu" and not gpu and not args.dry_run:
            refuse(f"--scale gpu: no CUDA device here (--device {args.device}, torch.cuda.is_available() is "
                   f"{torch.cuda.is_available()}); the gpu scale runs its units side by side on one GPU: choose "
                   "--scale cpu, or plan it here with --dry-run")
        cores, threads = usable_cores(), args.threads
        memory = torch.cuda.get_device_properties(0).total_memory / 2 ** 30 if gpu else None
        if scale.jobs == 0:  # as many units as the machine holds, each on one thread unless told otherwise
            threads = threads or 1
            scale = dataclasses.replace(scale, jobs=units_at_once(threads, scale.workers, memory, cores))
        threads = threads or max(1, cores // scale.jobs)  # the cores shared by the units at once
        if scale.jobs * threads > cores:
            refuse(f"--jobs {scale.jobs} × --threads {threads}: {scale.jobs * threads} torch threads on {cores} usable "
                   f"core(s), which slows every unit beyond its planned cost; take --jobs × --threads ≤ {cores}")
        same = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        paths = {k: v.expanduser().absolute() for k in ("root", "out", "pretrain_data") if (v := getattr(args, k))}
        return cls(**same | paths | dict(
            scale_name=name, scale=scale, network=parse_network(args.network, scale), arms=tuple(args.arms),
            encoders=tuple(encoders.items()), threads=threads, memory_gib=memory,
            lesion_classes=tuple(args.lesion_classes), overrides=tuple(args.override)))

    @property
    def pretraining(self) -> list[str]:
        """The arms pretrained on the cohort and the negative control, in the order named."""
        return [a for a in self.arms if ARMS[a].pretrained]

    @property
    def positive_control(self) -> bool:
        """Whether an arm trained with labels (the positive control) is among the arms."""
        return any(ARMS[a].labels for a in self.arms)

    @property
    def threads_override(self) -> list[str]:
        """``trainer.threads`` of every run, when --threads is given."""
        return [f"trainer.threads={self.threads}"] if self.threads else []
