"""Evaluation as a Python function: the job behind `asa-evaluate` (Dice, HD95, NSD, encoder reliance)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig

from asa.api.common import cases_of_split, dataset_root, refusing
from asa.api.rundir import check_writable
from asa.api.schema import EvaluateConfig, as_config
from asa.api.tasks import finetune_task
from asa.data import discover, get_task, read_targets, subject_groups
from asa.eval.case_outputs import PREDICTIONS_CSV, case_summary, read_case_predictions
from asa.io import atomic_write_json
from asa.eval import evaluate_cases, match_predictions
from asa.eval.evaluate import nsd_tolerances, write_results
from asa.eval.predict import Predictor
from asa.eval.reliance import encoder_reliance, format_reliance, write_reliance

__all__ = ["evaluate", "evaluate_case", "evaluate_segmentation"]


def evaluate(config: EvaluateConfig | DictConfig) -> dict:
    """Evaluate as configured (asa-evaluate); returns the summary (also written to ``<output>/summary.json``).

    ``config``: the typed config (EvaluateConfig, e.g. from ``load_config("evaluate")``) or a composed
    Hydra config; it is checked against the schema first. The fine-tuning task of ``data.task``
    (`asa.api.tasks`) scores."""
    with refusing():  # nothing is written before the end: a bad option or input refuses the job (exit 2)
        cfg = as_config(config, "evaluate")
        check_writable(Path(cfg.output).absolute(), "output")  # before the scoring, not after it
        return finetune_task(cfg.data.task).evaluate(cfg)


def evaluate_case(cfg: EvaluateConfig) -> dict:
    """``data.task=case``: score ``<pred>/predictions.csv`` against ``data.target`` (summary with
    bootstrap intervals, `asa.eval.case_outputs.case_summary`), written to ``<output>/summary.json``."""
    data = cfg.data
    if cfg.pred is None or data.target is None:
        raise ValueError("asa-evaluate with data.task=case needs pred=DIR (holding asa-predict's predictions.csv) and "
                         "data.target=COLUMN")
    if cfg.reliance.checkpoint is not None:
        raise ValueError("reliance.checkpoint: the encoder-reliance diagnostic is for segmenters, not case heads")
    root, layout = dataset_root(data)
    cases = discover(layout, root, require_labels=False, on_bad_case=data.on_bad_case, option="data.on_bad_case")
    cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=str(root))
    table = read_targets(data.targets if data.targets is not None else root, str(data.target),
                         kind=data.target_kind, classes=None if data.classes is None else list(data.classes))
    targets = table.for_cases(cases)
    predictions = read_case_predictions(Path(str(cfg.pred)).expanduser() / PREDICTIONS_CSV)
    missing = sorted(c.id for c in cases if c.id in targets.values and c.id not in predictions)
    if missing and cfg.on_missing == "error":
        raise FileNotFoundError(f"pred={cfg.pred}: no prediction for {len(missing)} case(s) with a target "
                                f"({', '.join(missing[:5])}); on_missing=skip scores the others")
    summary = case_summary({c.id: predictions[c.id] for c in cases if c.id in predictions}, targets,
                           groups=subject_groups(cases))  # sessions of a subject are resampled together
    summary["n_expected"] = len([c for c in cases if c.id in targets.values])
    summary["missing_predictions"] = missing
    out = Path(cfg.output).absolute()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", summary)
    lines = [f"{name} {m['value']:.4g}" + (f" [{m['ci_low']:.4g}, {m['ci_high']:.4g}]" if m["ci_low"] is not None else "")
             if m["value"] is not None else f"{name} undefined" for name, m in summary["metrics"].items()]
    print(f"[asa] {summary['n']} case(s), {data.target} ({targets.kind}): " + "; ".join(lines)
          + f"\n[asa] wrote {out / 'summary.json'}", flush=True)
    return summary


def evaluate_segmentation(cfg: EvaluateConfig) -> dict:
    """Score ``<pred>/<case>.nii.gz`` against the labels of a segmentation task (Dice, HD95, NSD per
    region or class; ``per_case.csv`` and ``summary.json`` under ``output``), and the encoder-reliance
    diagnostic of ``reliance.checkpoint``."""
    data = cfg.data
    root, layout = dataset_root(data)
    task = get_task(data.task, root=root)
    cases = discover(layout, root, on_bad_case=data.on_bad_case, option="data.on_bad_case")
    cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=str(root))
    out = Path(cfg.output).absolute()
    if cfg.pred is None and cfg.reliance.checkpoint is None:
        raise ValueError("asa-evaluate needs pred=DIR (predictions to score) or reliance.checkpoint=CKPT "
                         "(the encoder-reliance diagnostic of a fine-tuned checkpoint), or both")
    summary: dict = {}
    if cfg.pred is not None:
        tolerance = cfg.nsd_tolerance
        tolerance = list(tolerance) if isinstance(tolerance, ListConfig) else tolerance
        tolerances = nsd_tolerances(tolerance, task.output_names, option="nsd_tolerance")
        pred_dir = Path(str(cfg.pred)).expanduser()
        if not pred_dir.is_dir():
            raise FileNotFoundError(f"pred={pred_dir}: no such folder")
        missing: list[str] = []
        pairs = match_predictions(pred_dir, cases, on_missing=cfg.on_missing, missing=missing)
        if not pairs:
            raise FileNotFoundError(f"pred={pred_dir}: no prediction for any of the {len(cases)} case(s) "
                                    f"(expected <case_id>.nii.gz, e.g. {cases[0].id}.nii.gz)")
        summary = evaluate_cases(pairs, task, num_workers=cfg.num_workers, progress=True,
                                 hd95_convention=str(cfg.hd95), nsd_tolerance=tolerances)
        # what was left out is part of the result: a mean over 1 of 2 cases is not the mean over 2
        summary["n_expected"] = len(cases)
        summary["skipped"] = [{"id": cid, "reason": f"no prediction in {pred_dir} (on_missing=skip)"}
                              for cid in missing]
        write_results(summary, out)
        if missing:
            print(f"[asa] warning: {len(missing)} of {len(cases)} case(s) have no prediction and are not scored "
                  f"(on_missing=skip; listed in summary.json): {', '.join(missing[:10])}"
                  f"{' ...' if len(missing) > 10 else ''}", file=sys.stderr, flush=True)
        print(f"[asa] {task.name}: {summary['n_cases']} of {len(cases)} case(s) scored; HD95 convention {cfg.hd95}; "
              f"NSD tolerance " + ", ".join(f"{n} {t:g} mm" for n, t in tolerances.items()))
        for name in task.output_names:
            s = summary[name]
            print(f"  {name:>4}: Dice {s['Dice']['mean']:.4f} (median {s['Dice']['median']:.4f}), "
                  f"HD95 {s['HD95']['mean']:.2f} mm (median {s['HD95']['median']:.2f}), "
                  f"NSD {s['NSD']['mean']:.4f} (median {s['NSD']['median']:.4f})")
        print(f"  per-case results: {out / 'per_case.csv'}; summary: {out / 'summary.json'}", flush=True)
    if cfg.reliance.checkpoint is not None:
        summary["reliance"] = _reliance(cfg, task, cases, out)
    return summary


def _reliance(cfg: EvaluateConfig, task, cases: list, out: Path) -> dict:
    """Encoder-reliance diagnostic of ``reliance.checkpoint`` on ``cases``; writes reliance files under ``out``."""
    ckpt = Path(str(cfg.reliance.checkpoint)).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"reliance.checkpoint={ckpt}: no such file (a best.pt / last.pt of asa-finetune)")
    device = cfg.reliance.device
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    predictor = Predictor.from_checkpoint(ckpt, device=device)
    if predictor.task.name != task.name or predictor.task.output_names != task.output_names:
        raise ValueError(f"reliance.checkpoint={ckpt} was trained on task {predictor.task.name} "
                         f"{list(predictor.task.output_names)}, but data={cfg.data.name} is {task.name}")
    result = encoder_reliance(predictor, cases, overlap=cfg.reliance.overlap, progress=True)
    csv_path, json_path = write_reliance(result, out)
    print(format_reliance(result))
    print(f"  per-case: {csv_path}; summary: {json_path}", flush=True)
    return result

