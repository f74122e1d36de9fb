"""`asa-finetune`: compose the Hydra config (configs/finetune/) and run :func:`asa.api.finetune`."""

from __future__ import annotations

from asa.cli.help import hydra_script

__all__ = ["main"]

main = hydra_script("asa-finetune", "finetune")

if __name__ == "__main__":
    main()
