"""CPU inference per case: the torch checkpoint against its ``asa-export --format onnx`` file, side by side.

For each network a segmenter is fine-tuned for one step on demo BraTS phantoms (the cost of a forward pass does not
depend on the weights), exported as ONNX, and every case is predicted by both through asa's own sliding windows
(`asa.eval.predict.predict_case`: the same windows, blending and output files), torch and onnxruntime alternating so
that a load change on a shared machine falls on both. Reported per network: the median seconds per case of each, their
ratio, and the share of voxels whose labels agree.

    python -m benchmarks.onnx_cpu --size 96 --crop 64 --threads 2 --out /tmp/onnx_bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from asa.api import finetune
from asa.api.config import compose_config
from asa.api.export import export_model
from asa.formats.onnx import ONNX_FILE
from asa.data import discover, write_demo_dataset
from asa.eval.predict import Predictor, predict_case
from asa.io import load_volume

NETWORKS = {  # name -> asa-finetune overrides
    "resenc-M": ["model=resenc", "model.size=M"],
    "swvit_unetr-small": ["model=small"],
    "unetr": ["model=unetr"],
    "swin_unetr": ["model=swin_unetr"],
}


def _seconds(predictor: Predictor, case, out: Path) -> tuple[float, Path]:
    start = time.perf_counter()
    label = predict_case(predictor, case, out, overlap=0.5, sw_batch_size=1)[0]
    return time.perf_counter() - start, label


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="edge of the demo cases (voxels)")
    parser.add_argument("--crop", type=int, default=64, help="the networks' window edge (voxels)")
    parser.add_argument("--cases", type=int, default=4, help="demo cases (fine-tuning needs 4), each predicted")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = write_demo_dataset("brats", args.out / "data", cases=args.cases, size=args.size, seed=0)
    cases = discover("brats", root, require_labels=False)
    results = {}
    for name in args.networks:
        run = args.out / name
        finetune(compose_config("finetune", ["data=brats", f"data.root={root}", *NETWORKS[name],
                                             f"data.crop={args.crop}", "trainer=smoke", "trainer.max_steps=1",
                                             f"output_dir={run}", "device=cpu", "data.num_workers=0",
                                             "trainer.amp=off"]))
        last = run / "checkpoints" / "last.pt"
        folder = export_model(last, args.out / f"{name}-model", format="onnx")
        cpu = torch.device("cpu")
        backends = {"torch": Predictor.from_checkpoint(last, device=cpu),
                    "onnxruntime": Predictor.from_checkpoint(folder / ONNX_FILE, device=cpu)}
        times: dict[str, list[float]] = {b: [] for b in backends}
        agree = []
        for case in cases:
            labels = {}
            for backend, predictor in backends.items():
                seconds, labels[backend] = _seconds(predictor, case, args.out / f"{name}-{backend}")
                times[backend].append(seconds)
            a, b = (load_volume(labels[k], label=True).array for k in backends)
            agree.append(float((a == b).mean()))
        torch_s, ort_s = (statistics.median(times[b]) for b in backends)
        results[name] = {"torch_s": torch_s, "onnxruntime_s": ort_s, "ratio": ort_s / torch_s,
                         "label_agreement_min": min(agree), "times": times}
        print(f"{name}: torch {torch_s:.2f} s/case, onnxruntime {ort_s:.2f} s/case (x{ort_s / torch_s:.2f}), "
              f"labels agree on {100 * min(agree):.4f} % of voxels (worst case)", flush=True)
    summary = {"size": args.size, "crop": args.crop, "cases": args.cases, "threads": args.threads,
               "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__, "networks": results}
    (args.out / "onnx_cpu.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
