"""`asa-pretrain`: compose the Hydra config (configs/pretrain/) and run :func:`asa.api.pretrain`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asa.api import pretrain
from asa.api.config import config_path
from asa.cli.common import entry

__all__ = ["main"]


@hydra.main(config_path=config_path("pretrain"), config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    entry("asa-pretrain", pretrain, cfg)


if __name__ == "__main__":
    main()
