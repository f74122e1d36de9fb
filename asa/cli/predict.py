"""`asa-predict`: segment scans with a fine-tuned checkpoint; outputs in each input's own space."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from asa.cli.common import entry
from asa.cli.config import config_path
from asa.cli.schema import validate as validate_config
from asa.train.distributed import resolve_device
from asa.train.precision import amp_name, resolve_amp, set_threads

__all__ = ["main", "run"]


def run(cfg: DictConfig) -> list[Path]:
    """Predict as configured; returns the written label files."""
    validate_config(cfg, "predict")  # also catches keys added with +key=value
    from asa.eval.predict import Predictor, gather_cases, predict_cases

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
        predictor, cases, str(cfg.output), overlap=float(cfg.overlap), sw_batch_size=int(cfg.sw_batch_size),
        tta_axes=tta_axes, save_probabilities=bool(cfg.save_probabilities), overwrite=bool(cfg.overwrite),
        on_bad_case=on_bad_case, skipped=skipped, progress=sys.stderr.isatty(),
    )
    print(f"[asa] wrote {len(written)} prediction(s) ({predictor.task.name}: "
          f"{', '.join(predictor.task.output_names)}) to {Path(str(cfg.output)).absolute()}", flush=True)
    if skipped:
        print(f"[asa] skipped {len(skipped)} case(s) (on_bad_case=skip):\n"
              + "\n".join(f"  - {cid}: {reason}" for cid, reason in skipped), file=sys.stderr, flush=True)
    return written


@hydra.main(config_path=config_path("predict"), config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    entry("asa-predict", run, cfg)


if __name__ == "__main__":
    main()
