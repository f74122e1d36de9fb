"""``python -m asa.cli.fused GROUP.json``: a study's fine-tuning runs of one draw trained as one
(`asa.api.finetune.finetune_fused`), each run's asa-finetune overrides in ``GROUP.json``'s ``runs``. The exit codes
are asa-finetune's; a stop (SIGTERM, SIGUSR1) saves every run, and the same command resumes them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from hydra.errors import HydraException

from asa.api.config import compose_config, describe_compose_error
from asa.api.finetune import finetune_fused
from asa.cli.common import EXIT_REFUSED, entry

APP = "asa-study fused"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m asa.cli.fused",
        description="Train the fine-tuning runs of one draw as one (what asa-study --fused runs for each draw): "
                    "each run's folder, checkpoints and logs are those of its own asa-finetune command.",
        epilog="exit codes: asa-finetune's (0 finished, 1 failed, 2 refused, 128 + N stopped by signal N, every run "
               "saved: the same command resumes them).")
    p.add_argument("group", type=Path, help=(
        'a JSON file {"runs": [[OVERRIDE, ...], ...]}: each run\'s asa-finetune overrides, two runs or more '
        "(asa-study --fused writes one a draw, <out>/<stage>/fused/<draw>.json)"))
    return p


def group_runs(path: Path) -> list[list[str]]:
    """The runs' overrides in ``path``, or a one-line refusal (exit 2) naming the file and what was expected."""
    expected = 'expected {"runs": [[OVERRIDE, ...], ...]} with two runs or more'
    try:
        runs = json.loads(path.read_text())["runs"]
    except OSError as err:
        _refuse(f"{path}: cannot be read ({err.strerror or err})")
    except (ValueError, TypeError, KeyError) as err:
        _refuse(f"{path}: not a group of runs ({type(err).__name__}: {err}); {expected}")
    if (not isinstance(runs, list) or len(runs) < 2
            or not all(isinstance(run, list) and all(isinstance(o, str) for o in run) for run in runs)):
        _refuse(f"{path}: runs is {json.dumps(runs)[:80]}; {expected}")
    return runs


def _refuse(message: str) -> NoReturn:
    print(f"[{APP}] refused: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_REFUSED)


def main(argv: Sequence[str] | None = None) -> None:
    """Compose each run's config as its asa-finetune command line would, then train them as one."""
    group = build_parser().parse_args(argv).group
    configs = []
    for k, overrides in enumerate(group_runs(group)):
        try:
            configs.append(compose_config("finetune", overrides))
        except HydraException as err:  # as asa-finetune's command line would be refused
            why = describe_compose_error(f"{err}\n{err.__cause__ or ''}")
            _refuse(f"{group}: run {k}'s overrides do not compose: {why}".replace("\n", " "))
    entry(APP, lambda _: finetune_fused(configs)[0], configs[0])


if __name__ == "__main__":
    main()
