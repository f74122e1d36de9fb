"""Frozen-encoder evaluation as a Python function: the job behind `asa-probe`.

Every encoder given (checkpoints and exports of any asa network with an encoder, and random-init
twins as baselines) is frozen, run once over the dataset's cases (its own input grid: the
brain-centred pretraining crop) and probed with k-fold cross-validation (`asa.eval.probe_cv`):
case targets on the mean of the brain tokens, voxel labels per patch. The result is one row per
encoder, printed and written to ``<output>/probe.{md,csv,svg,json}``; an output folder holding
results is refused unless ``overwrite=true`` (the old folder is moved aside, nothing is deleted).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig

from asa.api.configuration.checks import as_config
from asa.api.machinery.cohort import check_probe_overlap
from asa.api.machinery.dataset import dataset_root
from asa.api.machinery.run import OptionError, refusing
from asa.api.machinery.rundir import RunDirError, check_writable, command_line, move_aside
from asa.api.configuration.schema import FrozenProbeConfig
from asa.api.tasks import finetune_task
from asa.eval.frozen import RANDOM, FrozenEncoder, load_frozen, random_frozen
from asa.eval.plots import interval_plot
from asa.eval.probe_cv import TABLE_METRICS
from asa.io import atomic_write_json, atomic_write_text
from asa.train.distributed import resolve_device

__all__ = ["OUTPUTS", "probe", "probe_table"]

APP = "asa-probe"
OUTPUTS = ("probe.md", "probe.csv", "probe.svg", "probe.json")
LABELS = {"r2": "R²", "mae": "MAE", "balanced_accuracy": "bal. acc.", "auroc": "AUROC", "accuracy": "accuracy",
          "r2_mean": "R² mean"}


def _check_options(cfg: FrozenProbeConfig) -> list[str]:
    """The encoder entries; refuses values the probes cannot run with, naming the option."""
    entries = [str(e) for e in cfg.encoders]
    if not entries:
        raise OptionError("encoders=[]: give at least one checkpoint or export (and random for a random-init row)")
    if cfg.data.channels is not None:
        raise OptionError(f"data.channels={list(cfg.data.channels)}: asa-probe reads the channels of its own option; "
                          f"set channels={list(cfg.data.channels)} instead")
    if cfg.names is not None and len(cfg.names) != len(entries):
        raise OptionError(f"names: {len(cfg.names)} name(s) for {len(entries)} encoder(s); give one per encoder or "
                          "names=null")
    checks = [("folds", cfg.folds >= 2, "at least 2"), ("knn_k", cfg.knn_k >= 1, "at least 1"),
              ("ridge", cfg.ridge > 0, "> 0"), ("logistic", cfg.logistic > 0, "> 0"),
              ("logistic_steps", cfg.logistic_steps >= 1, "at least 1"),
              ("bootstrap", cfg.bootstrap >= 0, ">= 0"), ("confidence", 0 < cfg.confidence < 1, "in (0, 1)"),
              ("batch_size", cfg.batch_size >= 1, "at least 1")]
    for key, ok, expected in checks:
        if not ok:
            raise OptionError(f"{key}={getattr(cfg, key)}: expected {expected}")
    return entries


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse a file, or a folder holding results, unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output={out} is a file, not a folder")
    held = [name for name in OUTPUTS if (out / name).exists()]
    if held and not overwrite:
        raise RunDirError(f"output={out} already holds results ({', '.join(held)}); nothing was written. Write "
                          f"elsewhere (output={out}-new) or replace them with overwrite=true (the old folder is moved "
                          f"to {out.name}.replaced-<time>)")


def _encoders(entries: Sequence[str], names: Sequence[str] | None, cfg: FrozenProbeConfig, device) -> list[FrozenEncoder]:
    """The frozen encoders in the order given; random entries take the first file's spec."""
    files = [e for e in entries if not (e == RANDOM or e.startswith(RANDOM + ":"))]
    crop = None if cfg.crop is None else int(cfg.crop)
    loaded = {e: load_frozen(e, crop=crop, device=device) for e in dict.fromkeys(files)}
    first = loaded[files[0]] if files else None
    out = []
    for i, entry in enumerate(entries):
        enc = loaded.get(entry) or random_frozen(entry, like=first, seed=cfg.seed, crop=crop, device=device)
        name = str(names[i]) if names is not None else (entry if entry in loaded else enc.name)
        out.append(dataclasses.replace(enc, name=name))
    channels = len(cfg.channels)
    wrong = [e.name for e in out if e.in_channels != channels]
    if wrong:
        raise OptionError(f"channels={list(cfg.channels)}: {len(wrong)} encoder(s) take another number of input channels "
                          f"({', '.join(f'{e.name}: {e.in_channels}' for e in out if e.name in wrong)})")
    return out


def _groups(cases: Sequence) -> list[str]:
    """Each case's subject (the case id where the layout records none)."""
    return [str(c.meta.get("subject") or c.id) for c in cases]


def probe(config: FrozenProbeConfig | DictConfig) -> dict:
    """Probe frozen encoders as configured (asa-probe); returns the result written to ``probe.json``
    (``rows``: one per encoder with its metrics, each ``{"value", "ci_low", "ci_high", ...}``).

    ``config``: the typed config (FrozenProbeConfig, e.g. ``load_config("probe", "encoders=[a.pt,random]",
    "output=out")``) or a composed Hydra config. Every option is checked and every encoder loaded
    before anything is written; a bad option raises `OptionError`, a used output folder `RunDirError`."""
    with refusing():
        cfg = as_config(config, "probe")
        entries = _check_options(cfg)
        device = resolve_device(cfg.device)
        out = Path(cfg.output).expanduser().absolute()
        _check_output(out, cfg.overwrite)
        check_writable(out, "output")  # before the probes run, not after
        encoders = _encoders(entries, cfg.names, cfg, device)
        root, layout = dataset_root(cfg.data)
        probed = finetune_task(cfg.data.task).probe_targets(cfg, root, layout)
        cases, target, kind = probed.cases, probed.target, probed.kind
        check_probe_overlap([e for e in entries if not (e == RANDOM or e.startswith(RANDOM + ":"))], cases,
                            accept=cfg.data.accept_pretraining_overlap)
        if len({*_groups(cases)}) < 2:
            raise ValueError(f"data.root={root}: {len(cases)} usable case(s) of {len({*_groups(cases)})} subject(s); "
                             "cross-validation needs at least 2 subjects")
    groups = _groups(cases)
    subjects = len({*groups})
    folds = min(cfg.folds, subjects)  # a subject is never split over folds (`grouped_folds`)
    settings = {k: getattr(cfg, k) for k in ("folds", "seed", "ridge", "logistic", "logistic_steps", "knn_k", "bootstrap",
                                    "confidence", "batch_size")}
    settings["folds"] = folds
    if folds < cfg.folds:
        settings["folds_asked"] = cfg.folds
    fewer = (f" (folds={cfg.folds} asked, but there are only {subjects} subjects: one subject per fold)"
             if folds < cfg.folds else "")
    what = target.get("column") or target.get("task") or cfg.data.task
    print(f"[asa] probing {len(encoders)} frozen encoder(s) on {len(cases)} case(s) of {subjects} subject(s) "
          f"from {root} ({what}, {target['kind']}), {folds}-fold cross-validation{fewer}, {device}", flush=True)
    if probed.note:
        print(f"[asa] {probed.note}", file=sys.stderr, flush=True)
    common = dict(folds=folds, seed=cfg.seed, n_resamples=cfg.bootstrap,
                  confidence=cfg.confidence, knn_k=cfg.knn_k, ridge=cfg.ridge)
    rows = []
    try:
        for enc in encoders:
            rows.append(_probe_one(probed, enc, groups, common, settings, cfg, kind))
    except SystemExit as stop:  # a stop signal: the tables are written only once every encoder is probed
        stop.kept = (f"nothing written to output={out}: {len(rows)} of {len(encoders)} encoder(s) probed, the "
                     "tables are written once all are; run the same command again")
        raise
    record = {"format": "asa-probe", "version": 1, "time": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": command_line(APP, drop=()), "data": {"root": str(root), "layout": layout, "n": len(cases),
                                                              "subjects": len({*groups})},
              "target": target, "settings": settings, "table": list(TABLE_METRICS[kind]),
              "cases": [c.id for c in cases], "rows": rows}
    if cfg.overwrite and out.exists() and any(out.iterdir()):
        aside = move_aside(out)
        print(f"[asa] overwrite=true: moved the previous results to {aside}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    table_md, table_csv, svg = probe_table(record)
    atomic_write_text(out / "probe.md", table_md)
    atomic_write_text(out / "probe.csv", table_csv)
    atomic_write_text(out / "probe.svg", svg)
    atomic_write_json(out / "probe.json", record)
    print(table_md, end="", flush=True)
    print(f"[asa] wrote {', '.join(str(out / name) for name in OUTPUTS)}", flush=True)
    return record


def _probe_one(probed, enc: FrozenEncoder, groups: list[str], common: dict, settings: dict,
               cfg: FrozenProbeConfig, kind: str) -> dict:
    """One encoder's row of the table, printed as it is scored (``settings`` and ``common`` take the folds the
    classes allow, said once)."""
    result, features = probed.score(enc, groups, common)
    if result["folds"] < settings["folds"]:  # lowered by the classes (`subject_folds`): said once
        print(f"[asa] note: folds={settings['folds']}: no class has that many cases, so {result['folds']}-fold "
              "cross-validation (each class spread over as many folds as it has cases)", file=sys.stderr,
              flush=True)
        settings.setdefault("folds_asked", cfg.folds)
        settings["folds"] = common["folds"] = result["folds"]
    row = {**enc.describe(), "dim": int(features.shape[-1]), **result}
    print(f"[asa] {enc.name}: " + "; ".join(_cell_text(name, row["metrics"][name]) for name in TABLE_METRICS[kind]),
          flush=True)
    return row


def _label(metric: str) -> str:
    probe_name, _, name = metric.partition("/")
    if name.startswith("r2_") and name != "r2_mean":
        return f"{probe_name} R² {name[3:]}"
    return f"{probe_name} {LABELS.get(name, name)}"


def _cell_text(metric: str, est: Mapping) -> str:
    return f"{_label(metric)} {_cell(est)}"


def _cell(est: Mapping) -> str:
    """``value [low, high]`` (4 significant digits), or ``undefined``."""
    if est.get("value") is None:
        return "undefined"
    text = f"{est['value']:.4g}"
    if est.get("ci_low") is not None and est.get("ci_high") is not None:
        text += f" [{est['ci_low']:.4g}, {est['ci_high']:.4g}]"
    return text


def probe_table(record: Mapping) -> tuple[str, str, str]:
    """(Markdown, CSV, SVG) of a probe result: one row per encoder, the table metrics with their
    intervals (CSV: value, low, high columns of every metric in the JSON)."""
    metrics = list(record["table"])
    confidence = record["settings"]["confidence"]
    head = ["encoder", "arch", "n", *(_label(m) for m in metrics)]
    lines = [f"{record['target'].get('column') or record['target'].get('task')} ({record['target']['kind']}): "
             f"{record['data']['n']} cases, {record['rows'][0]['folds']}-fold cross-validation, "
             f"{confidence:.0%} bootstrap CI in brackets\n",
             "| " + " | ".join(head) + " |", "|" + "|".join([" --- "] * 2 + [" ---: "] * (len(head) - 2)) + "|"]
    for row in record["rows"]:
        cells = [str(row["name"]).replace("|", "\\|"), row["arch"], str(row["n"]), *(_cell(row["metrics"][m]) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    all_metrics = list(dict.fromkeys(m for row in record["rows"] for m in row["metrics"]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["encoder", "arch", "source", "n", "folds",
                     *(f"{m}{suffix}" for m in all_metrics for suffix in ("", "_low", "_high"))])
    for row in record["rows"]:
        values = []
        for m in all_metrics:
            est = row["metrics"].get(m, {})
            values += ["" if est.get(k) is None else f"{est[k]:.6g}" for k in ("value", "ci_low", "ci_high")]
        writer.writerow([row["name"], row["arch"], row["source"], row["n"], row["folds"], *values])
    panels = {_label(m): [(row["metrics"][m].get("value"), row["metrics"][m].get("ci_low"),
                           row["metrics"][m].get("ci_high")) for row in record["rows"]] for m in metrics}
    svg = interval_plot([str(row["name"]) for row in record["rows"]], panels)
    return "\n".join(lines) + "\n", buf.getvalue(), svg
