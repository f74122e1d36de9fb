"""`asa-preprocess`: compose the Hydra config (configs/preprocess/) and run :func:`asa.api.preprocess`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asa.api import preprocess
from asa.api.config import config_path
from asa.cli.common import entry

__all__ = ["main"]


@hydra.main(config_path=config_path("preprocess"), config_name="preprocess", version_base="1.3")
def main(cfg: DictConfig) -> None:
    entry("asa-preprocess", preprocess, cfg)


if __name__ == "__main__":
    main()
