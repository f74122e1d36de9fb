"""`asa-finetune`: compose the Hydra config (configs/finetune/) and run :func:`asa.api.finetune`."""

from __future__ import annotations

from asa.api import finetune
from asa.cli.common import console_main

__all__ = ["main"]

main = console_main("asa-finetune", "finetune", finetune)

if __name__ == "__main__":
    main()
