"""``python -m asa.cli.fused GROUP.json``: a study's fine-tuning runs of one draw trained as one
(`asa.api.finetune.finetune_fused`), each run's asa-finetune overrides in ``GROUP.json``'s ``runs``. The exit codes
are asa-finetune's; a stop (SIGTERM, SIGUSR1) saves every run, and the same command resumes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from asa.api.config import compose_config
from asa.api.finetune import finetune_fused
from asa.cli.common import entry

APP = "asa-study fused"


def main(group_file: str) -> None:
    """Compose each run's config as its asa-finetune command line would, then train them as one."""
    configs = [compose_config("finetune", overrides) for overrides in json.loads(Path(group_file).read_text())["runs"]]
    entry(APP, lambda _: finetune_fused(configs)[0], configs[0])


if __name__ == "__main__":
    main(sys.argv[1])
