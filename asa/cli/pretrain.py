"""`asa-pretrain`: compose the Hydra config (configs/pretrain/) and run :func:`asa.api.pretrain`."""

from __future__ import annotations

from asa.cli.help import hydra_script

__all__ = ["main"]

main = hydra_script("asa-pretrain", "pretrain")

if __name__ == "__main__":
    main()
