"""`asa-predict`: compose the Hydra config (configs/predict/) and run :func:`asa.api.predict`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asa.api import predict
from asa.api.config import config_path
from asa.cli.common import entry

__all__ = ["main"]


@hydra.main(config_path=config_path("predict"), config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    entry("asa-predict", predict, cfg)


if __name__ == "__main__":
    main()
