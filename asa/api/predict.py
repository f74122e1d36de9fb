"""Prediction as a Python function: the job behind `asa-predict` (outputs in each input's own space)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from asa.api.schema import PredictConfig, as_config
from asa.eval.inference import check_sw_batch_size
from asa.eval.predict import Predictor, gather_cases, predict_cases
from asa.train.distributed import resolve_device
from asa.train.precision import amp_name, resolve_amp, set_threads

__all__ = ["predict"]


def predict(config: PredictConfig | DictConfig) -> list[Path]:
    """Predict as configured (asa-predict); returns the written label files.

    ``config``: the typed config (PredictConfig, e.g. from ``load_config("predict")``) or a composed
    Hydra config; it is checked against the schema first."""
    cfg = as_config(config, "predict")
    sw_batch_size = check_sw_batch_size(cfg.sw_batch_size)
    device = resolve_device(str(cfg.device))
    amp_dtype = resolve_amp(str(cfg.amp), device, option="amp")
    threads = set_threads(cfg.get("threads"), option="threads")
    compile_net = bool(cfg.get("compile", False))
    print(f"[asa] predicting on {device}, precision {amp_name(amp_dtype)} (amp={cfg.amp}), {threads} CPU threads"
          f"{', torch.compile' if compile_net else ''}", flush=True)
    predictor = Predictor.from_checkpoint(str(cfg.checkpoint), device=device, amp_dtype=amp_dtype,
                                          compile=compile_net)
    inputs = OmegaConf.to_container(cfg.input) if isinstance(cfg.input, ListConfig) else str(cfg.input)
    on_bad_case = str(cfg.on_bad_case)
    cases = gather_cases(inputs, predictor.task, layout=str(cfg.layout), on_bad_case=on_bad_case)
    tta_axes = list(cfg.tta_axes) if cfg.tta else []
    skipped: list[tuple[str, str]] = []
    written = predict_cases(
        predictor, cases, str(cfg.output), overlap=float(cfg.overlap), sw_batch_size=sw_batch_size,
        tta_axes=tta_axes, save_probabilities=bool(cfg.save_probabilities), overwrite=bool(cfg.overwrite),
        on_bad_case=on_bad_case, skipped=skipped, progress=sys.stderr.isatty(),
    )
    print(f"[asa] wrote {len(written)} prediction(s) ({predictor.task.name}: "
          f"{', '.join(predictor.task.output_names)}) to {Path(str(cfg.output)).absolute()}", flush=True)
    if skipped:
        print(f"[asa] skipped {len(skipped)} case(s) (on_bad_case=skip):\n"
              + "\n".join(f"  - {cid}: {reason}" for cid, reason in skipped), file=sys.stderr, flush=True)
    return written

