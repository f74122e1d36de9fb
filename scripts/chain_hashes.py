"""Same-seed fingerprints of the pretrain -> fine-tune chain, for behaviour-preserving changes.

Runs, for each path (ASA, ASA with RAT's region attention, SA-Swin, ASA with a case head, the residual-encoder
U-Net pretrained by masked convolution with SparK's recipe and with ASA's weight and both symmetry forms, and a
DynUNet trained from scratch), a tiny pretraining on the demo phantoms and a fine-tuning of its encoder on demo
IBSR phantoms (the case path: a diagnosis head on demo BIDS phantoms with targets), then prints one JSON object
with every logged training loss and the SHA-256 of each run's final weights (also written to
``--out``/chain.json). What comes after training is fingerprinted too: the frozen encoder's probe tokens of a
seeded volume (or the refusal's text), the tensors and plans of ``asa-export``'s folder, and, for the
residual-encoder paths, a fine-tuning started from the exported nnssl checkpoint. Run it before and after a
restructuring on the same machine: equal output means the change kept the numbers.

    python scripts/chain_hashes.py --out /tmp/chain_before
    diff /tmp/chain_before/chain.json /tmp/chain_after/chain.json

For the "before" side, a clean worktree of the earlier commit run with ``PYTHONPATH=<worktree>`` takes that commit's
code; its configs must be that commit's too. An editable install of another checkout serves that checkout's
``configs/`` as ``asa.configs``, so the script refuses to run when the configs it would compose are not the ones
beside the code it imports (link ``<worktree>/asa/configs`` to ``../configs``, as a wheel lays them out).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from safetensors.torch import load_file

from asa.api import finetune, load_config, pretrain
from asa.api.export import export_model
from asa.data import write_demo_dataset
from asa.eval.frozen import load_frozen
from asa.io import load_checkpoint
from asa.io.hub import NNSSL_CHECKPOINT

PATHS = {  # name -> (pretraining overrides or None: from scratch, fine-tuning overrides, fine-tuning crop); data=ibsr
    # unless given
    "asa": (["experiment=asa"], ["model=tiny"], 32),
    "rat": (["experiment=rat_asa"], ["model=tiny", "model.region_attention=alternate", "data.regions.source=cluster"],
            32),
    "sa_swin": (["experiment=sa_swin"], ["model=sa_swin"], 64),  # SwinUNETR's bottleneck needs 64³ (2³)
    "case": (["experiment=asa"], ["data=targets", "model=tiny", "task=case", "task.target=diagnosis",
                                   "data.accept_pretraining_overlap=true"], 32),  # the demo phantoms share ids
    "resenc_mae": (["model=resenc", "model.size=tiny", "method=mae"], ["model=resenc", "model.size=tiny"], 32),
    "resenc_asa_sym": (["model=resenc", "model.size=tiny", "method=asa", "model.mirror_visible=0.33",
                        "model.coord_channel=true"], ["model=resenc", "model.size=tiny", "model.coord_channel=true"], 32),
    "dynunet": (None, ["model=dynunet"], 32),
}
FOREIGN_PATHS = ("resenc_mae",)  # fine-tuned again from their nnssl export (the published-file route)


def weights_hash(checkpoint: Path) -> str:
    """SHA-256 over the checkpoint's model tensors, in key order."""
    state = load_checkpoint(checkpoint)["model"]
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tensors_hash(obj: object) -> str:
    """SHA-256 over every tensor in a nested dict/list (keys sorted), with its path, dtype and shape."""
    digest = hashlib.sha256()

    def walk(node: object, where: str) -> None:
        if isinstance(node, torch.Tensor):
            tensor = node.detach().cpu().contiguous()
            digest.update(f"{where}:{tensor.dtype}:{list(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(node, dict):
            for key in sorted(node, key=str):
                walk(node[key], f"{where}/{key}")
        elif isinstance(node, (list, tuple)):
            for i, item in enumerate(node):
                walk(item, f"{where}/{i}")

    walk(obj, "")
    return digest.hexdigest()


def tokens_hash(encoder: Path) -> str:
    """The frozen encoder's probe tokens of one seeded volume (`asa.eval.frozen.load_frozen`), or its refusal."""
    try:
        frozen = load_frozen(encoder)
    except ValueError as err:
        return f"refused: {err}".replace(str(encoder), "ENCODER")
    x = torch.randn((1, frozen.in_channels, *frozen.size), generator=torch.Generator().manual_seed(0))
    tokens = frozen.tokens(x)
    return f"{frozen.arch} {list(tokens.shape)} stride {frozen.stride} " + tensors_hash({"tokens": tokens})


def export_hash(checkpoint: Path, out: Path) -> dict[str, str]:
    """``asa-export``'s folder of ``checkpoint``: each weights file's tensors and each plans file's JSON, by name
    (config.json and the card hold the date, the commit and the software versions: left out)."""
    export_model(checkpoint, out)
    result = {}
    for path in sorted(out.iterdir()):
        if path.suffix in (".pt", ".pth"):
            result[path.name] = tensors_hash(torch.load(path, map_location="cpu", weights_only=True))
        elif path.suffix == ".safetensors":
            result[path.name] = tensors_hash(load_file(path))
        elif path.suffix == ".json" and path.name != "config.json":
            result[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def losses(run: Path) -> list[float]:
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return [round(e.value, 7) for e in events.Scalars("train/loss")] if "train/loss" in events.Tags()["scalars"] else []


def finetune_run(name: str, out: Path, steps: int, crop: int, overrides: list[str], pretrained: Path | None,
                 folder: str) -> Path:
    case = "data=targets" in overrides
    data = out / name / ("bids" if case else "ibsr")
    root = data if data.exists() else (
        write_demo_dataset("bids", data, cases=12, size=crop + 8, seed=1, targets=True) if case
        else write_demo_dataset("ibsr", data, cases=5, size=crop + 8, seed=1))
    ft = load_config("finetune", *([] if case else ["data=ibsr"]), "trainer=smoke", *overrides)
    ft.output_dir, ft.device, ft.seed = str(out / name / folder), "cpu", 0
    ft.data.root, ft.data.num_workers, ft.data.crop = str(root), 0, crop
    ft.model.pretrained = None if pretrained is None else str(pretrained)
    ft.data.accept_pretraining_overlap = case  # the demo BIDS phantoms reuse the pretraining phantoms' ids
    ft.trainer.max_steps, ft.trainer.epochs = steps, steps
    finetune(ft)
    return out / name / folder


def chain(name: str, out: Path, steps: int) -> dict:
    pre_overrides, ft_overrides, crop = PATHS[name]
    runs, result = {}, {}
    encoder = None
    if pre_overrides is not None:
        pre = load_config("pretrain", "model=tiny", "trainer=smoke", *pre_overrides)
        pre.output_dir, pre.device, pre.seed = str(out / name / "pre"), "cpu", 0
        pre.probe.every = 0
        pre.trainer.max_steps = steps
        pre.data.crop, pre.data.demo.size, pre.data.demo.cases = 32, 40, 6
        pre.data.demo.cache_dir = str(out / "cache")
        pretrain(pre)
        runs["pretrain"] = out / name / "pre"
        encoder = out / name / "pre" / "checkpoints" / "encoder.pt"
        result["tokens"] = tokens_hash(encoder)
        result["export"] = export_hash(out / name / "pre" / "checkpoints" / "last.pt", out / name / "export")
    runs["finetune"] = finetune_run(name, out, steps, crop, ft_overrides, encoder, "ft")
    if name in FOREIGN_PATHS:
        runs["finetune_nnssl"] = finetune_run(name, out, steps, crop, ft_overrides,
                                              out / name / "export" / NNSSL_CHECKPOINT, "ft_nnssl")
    for stage, run in runs.items():
        result[stage] = {"losses": losses(run), "weights": weights_hash(run / "checkpoints" / "last.pt")}
    return result


def check_configs() -> None:
    """Exit when the Hydra configs asa composes are not the ones beside the asa imported (see the module)."""
    import importlib.util

    import asa

    beside = Path(asa.__file__).resolve().parents[1] / "configs"
    try:
        spec = importlib.util.find_spec("asa.configs")
    except ModuleNotFoundError:
        spec = None
    served = Path(spec.submodule_search_locations[0]).resolve() if spec and spec.submodule_search_locations else None
    if beside.is_dir() and served is not None and served != beside.resolve():
        sys.exit(f"the configs composed would be {served}, not {beside} beside the code imported "
                 f"({Path(asa.__file__).parent}): link {Path(asa.__file__).parent / 'configs'} to ../configs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the runs")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--steps", type=int, default=3, help="optimisation steps per run")
    args = parser.parse_args(argv)
    check_configs()
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"--out {args.out}: not empty; give a new folder")
    result = {name: chain(name, args.out, args.steps) for name in args.paths}
    text = json.dumps(result, indent=1, sort_keys=True)
    (args.out / "chain.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
