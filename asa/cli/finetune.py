"""`asa-finetune`: compose the Hydra config (configs/finetune/) and run :func:`asa.api.finetune`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asa.api import finetune
from asa.api.config import config_path
from asa.cli.common import entry

__all__ = ["main"]


@hydra.main(config_path=config_path("finetune"), config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    entry("asa-finetune", finetune, cfg)


if __name__ == "__main__":
    main()
