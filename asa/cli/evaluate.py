"""`asa-evaluate`: compose the Hydra config (configs/evaluate/) and run :func:`asa.api.evaluate`."""

from __future__ import annotations

from asa.api import evaluate
from asa.cli.common import console_main

__all__ = ["main"]

main = console_main("asa-evaluate", "evaluate", evaluate)

if __name__ == "__main__":
    main()
