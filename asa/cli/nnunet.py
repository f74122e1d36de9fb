"""``asa-nnunet COMMAND [ARGS...]``: one of nnU-Net v2's console commands, started after asa's torchvision import.

nnU-Net imports torchvision through timm wherever it looks a trainer up by name (``nnUNetv2_train_pretrained``,
``nnUNetv2_predict``, ``nnUNetv2_train -tr nnUNetTrainer_warmup``). Beside a torch it was not built for (PyPI's
``torchvision==0.28.0`` is the CUDA torch 2.13.0's pair, not ``torch==2.13.0+cpu``'s) that import fails: ``operator
torchvision::nms does not exist``. `asa.models.torchvision_ops.import_torchvision` imports it with the missing C
operators skipped (nnU-Net's CNNs call none), as asa does for itself; the command is then nnU-Net's own entry point.
Two things are added: a relative ``-pc`` is made absolute (``nnUNetv2_preprocess_like_nnssl`` stores it in the plans,
which training opens from wherever it runs), and after that command the plans it wrote are named.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution
from pathlib import Path

from asa.cli.help import kept_text

__all__ = ["CHECKPOINT_OPTIONS", "HELP", "ROUTE_PREPROCESS", "absolute_checkpoint", "main", "nnunet_commands"]

ROUTE_PREPROCESS = "nnUNetv2_preprocess_like_nnssl"
CHECKPOINT_OPTIONS = ("-pc", "--pretrained_checkpoint")  # like_nnssl.py's option, kept in the plans as given
HELP = """\
usage: asa-nnunet COMMAND [ARGS...]
Runs nnU-Net v2's console command COMMAND with its own arguments (asa-nnunet COMMAND -h: its help), after importing
torchvision as asa does: a torchvision built for another torch than the installed one (PyPI's torchvision 0.28.0
beside the CPU torch 2.13.0) is imported without the C operators that did not load, where nnU-Net's own command
stops at "operator torchvision::nms does not exist".
  asa-nnunet nnUNetv2_train_pretrained 137 3d_fullres 0 -p PLANS -tr PretrainedTrainer -device cpu
A relative -pc of nnUNetv2_preprocess_like_nnssl is made absolute (nnU-Net keeps it in the plans, which training
opens from wherever it runs); after that command, the name of the plans it wrote is printed.
Exit codes: nnU-Net's own; 2 when COMMAND is missing, not nnU-Net's, or nnU-Net is not installed.
See docs/weights-elsewhere.md, "nnssl's format and nnU-Net's nnssl route".
"""


def nnunet_commands() -> dict[str, EntryPoint]:
    """nnU-Net v2's console commands as its installed distribution declares them; empty when it is not installed."""
    try:
        points = distribution("nnunetv2").entry_points
    except PackageNotFoundError:
        return {}
    return {point.name: point for point in points if point.group == "console_scripts"}


def absolute_checkpoint(args: Sequence[str], cwd: str | os.PathLike) -> list[str]:
    """``args`` with the path of ``-pc`` / ``--pretrained_checkpoint`` (``-pc X`` or ``-pc=X``) made absolute against
    ``cwd``; a URL (nnU-Net downloads ``https://huggingface.co/...``) and everything else left as given."""
    def absolute(path: str) -> str:
        return path if "://" in path else os.path.normpath(os.path.join(cwd, path))

    out = list(args)
    for i, arg in enumerate(out):
        option, eq, value = arg.partition("=")
        if option in CHECKPOINT_OPTIONS and eq:
            out[i] = f"{option}={absolute(value)}"
        elif option in CHECKPOINT_OPTIONS and i + 1 < len(out):
            out[i + 1] = absolute(out[i + 1])
    return out


def _written_plans(args: Sequence[str]) -> Path | None:
    """The plans file ``nnUNetv2_preprocess_like_nnssl`` ``args`` just wrote (the newest of its ``-n``), if found."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-d", type=int)
    parser.add_argument("-n", "--pretraining_name")
    known, _ = parser.parse_known_args(args)
    if known.d is None or known.pretraining_name is None:
        return None
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    folder = Path(nnUNet_preprocessed, convert_id_to_dataset_name(known.d))
    written = sorted(folder.glob(f"ptPlans__{known.pretraining_name}____*.json"), key=lambda p: p.stat().st_mtime)
    return written[-1] if written else None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):  # printed before torch loads; after COMMAND, -h is nnU-Net's
        print(kept_text("nnunet", lambda: HELP), end="", flush=True)
        sys.exit(0)
    if not args:
        print(f"[asa-nnunet] refused: no COMMAND given\n{HELP.splitlines()[0]}", file=sys.stderr)
        return 2
    commands = nnunet_commands()
    name, rest = args[0], args[1:]
    if not commands:
        print(f"[asa-nnunet] refused: {name}: nnU-Net v2 is not installed (pip install nnunetv2, or nnU-Net's branch "
              "that docs/weights-elsewhere.md names)", file=sys.stderr)
        return 2
    if name not in commands:
        print(f"[asa-nnunet] refused: {name!r} is not one of nnU-Net's commands ({', '.join(sorted(commands))})",
              file=sys.stderr)
        return 2
    given, rest = rest, absolute_checkpoint(rest, os.getcwd())
    for before, after in zip(given, rest):
        if before != after:
            print(f"[asa-nnunet] {before} taken as {after}: the plans keep the checkpoint's path for training",
                  file=sys.stderr)
    from asa.models.torchvision_ops import import_torchvision  # here: the refusals above come before torch loads

    import_torchvision()
    entry = commands[name].load()
    sys.argv = [name, *rest]
    code = entry()
    if name == ROUTE_PREPROCESS and (plans := _written_plans(rest)) is not None:
        print(f"[asa-nnunet] plans written: {plans.stem} (-p of nnUNetv2_train_pretrained and nnUNetv2_predict)")
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
