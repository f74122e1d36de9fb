"""`asa-predict`: compose the Hydra config (configs/predict/) and run :func:`asa.api.predict`."""

from __future__ import annotations

from asa.cli.help import hydra_script

__all__ = ["main"]

main = hydra_script("asa-predict", "predict")

if __name__ == "__main__":
    main()
