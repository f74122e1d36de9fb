"""`asa-predict` of a case head (``asa-finetune data.task=case``): one CSV of per-case predictions."""

from __future__ import annotations

import sys
from pathlib import Path

from asa.api.common import OptionError, cases_of_split
from asa.api.rundir import RunDirError, check_writable, move_aside
from asa.api.schema import PredictConfig
from asa.api.tasks import PredictSetup
from asa.data import detect_layout, discover
from asa.eval.case_outputs import PREDICTIONS_CSV, predict_case_rows, write_case_predictions
from asa.models import build_network

__all__ = ["predict_case"]


def predict_case(cfg: PredictConfig, state: dict, checkpoint: Path, inputs: list[str] | str,
                 setup: PredictSetup) -> list[Path]:
    """Write ``<output>/predictions.csv`` for the cases of ``inputs`` (a BIDS / CAPS / file-list
    folder; ``split_file`` + ``subset`` select a run's split) with the case head in ``state`` (the
    checkpoint's content); returns ``[that file]``. An output holding one is refused unless
    ``overwrite=true`` (moved aside)."""
    device = setup.device
    task = state["config"]["task"]
    if bool(cfg.resume):
        raise OptionError("resume=true: a case head writes one predictions.csv per run; predict again instead")
    if not isinstance(inputs, str) or not Path(inputs).expanduser().is_dir():
        raise OptionError(f"input={inputs}: a case head predicts the cases of a dataset folder (BIDS, CAPS or a "
                          "file list), as data.root of asa-finetune")
    root = Path(inputs).expanduser()
    layout = detect_layout(root) if cfg.layout == "auto" else cfg.layout
    cases = discover(layout, root, require_labels=False, on_bad_case=cfg.on_bad_case)
    cases = cases_of_split(cases, cfg.split_file, cfg.subset, where=f"input={inputs}")
    out = Path(cfg.output).expanduser().absolute()
    target = out / PREDICTIONS_CSV
    if target.exists() and not cfg.overwrite:
        raise RunDirError(f"output={out} already holds {PREDICTIONS_CSV}; use overwrite=true (it is moved aside) "
                          "or another output")
    check_writable(out, "output")
    model = build_network(state["network"])
    model.load_state_dict(state["model"])
    print(f"[asa] predicting {task['target']} ({task['kind']}) for {len(cases)} case(s) on {device}, outputs averaged "
          f"over crops={cfg.crops}", flush=True)
    rows = predict_case_rows(model, cases, task, device=device, crops=cfg.crops)
    if target.exists():
        print(f"[asa] overwrite=true: moved the previous predictions to {move_aside(out)}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    write_case_predictions(rows, target)
    print(f"[asa] wrote {len(rows)} prediction(s) of {task['target']} to {target}", flush=True)
    return [target]
