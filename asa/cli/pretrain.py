"""`asa-pretrain`: compose the Hydra config (configs/pretrain/) and run :func:`asa.api.pretrain`."""

from __future__ import annotations

from asa.api import pretrain
from asa.cli.common import console_main

__all__ = ["main"]

main = console_main("asa-pretrain", "pretrain", pretrain)

if __name__ == "__main__":
    main()
