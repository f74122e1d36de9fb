"""`asa-evaluate`: compose the Hydra config (configs/evaluate/) and run :func:`asa.api.evaluate`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asa.api import evaluate
from asa.api.config import config_path
from asa.cli.common import entry

__all__ = ["main"]


@hydra.main(config_path=config_path("evaluate"), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    entry("asa-evaluate", evaluate, cfg)


if __name__ == "__main__":
    main()
