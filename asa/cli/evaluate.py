"""`asa-evaluate`: Dice and HD95 of a folder of predictions against a dataset's reference labels."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from asa.train.config_files import config_path

__all__ = ["main", "run"]


def run(cfg: DictConfig) -> dict:
    """Evaluate as configured; returns the summary (also written to ``<output>/summary.json``)."""
    from asa.cli.common import dataset_root
    from asa.data import discover, get_task
    from asa.eval import evaluate_cases, match_predictions

    data = cfg.data
    if data.get("task") is None:
        raise ValueError(f"data={data.get('name')} has no labels to evaluate against; use data=brats, ibsr, wmh or msd")
    root, layout = dataset_root(data)
    task = get_task(str(data.task), root=root)
    cases = discover(layout, root, on_bad_case=str(data.on_bad_case))
    if cfg.split_file is not None:
        split_path = Path(str(cfg.split_file)).expanduser()
        if not split_path.is_file():
            raise FileNotFoundError(f"split_file={split_path}: no such file")
        splits = json.loads(split_path.read_text())
        if cfg.subset not in splits:
            raise ValueError(f"split_file={split_path} has no subset {cfg.subset!r} (has {sorted(splits)})")
        wanted = set(splits[cfg.subset])
        cases = [c for c in cases if c.id in wanted]
        if not cases:
            raise ValueError(f"none of the {cfg.subset} cases of {split_path} are in {root}")
    pred_dir = Path(str(cfg.pred)).expanduser()
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"pred={pred_dir}: no such folder")
    pairs = match_predictions(pred_dir, cases, on_missing=str(cfg.on_missing))
    summary = evaluate_cases(pairs, task, out_dir=str(cfg.output), num_workers=int(cfg.num_workers), progress=True,
                             hd95_convention=str(cfg.hd95))
    out = Path(str(cfg.output)).absolute()
    print(f"[asa] {task.name}: {summary['n_cases']} case(s); HD95 convention {cfg.hd95}")
    for name in task.output_names:
        s = summary[name]
        print(f"  {name:>4}: Dice {s['Dice']['mean']:.4f} (median {s['Dice']['median']:.4f}), "
              f"HD95 {s['HD95']['mean']:.2f} mm (median {s['HD95']['median']:.2f})")
    print(f"  per-case results: {out / 'per_case.csv'}; summary: {out / 'summary.json'}", flush=True)
    return summary


@hydra.main(config_path=config_path(), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
