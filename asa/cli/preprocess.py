"""`asa-preprocess`: compose the Hydra config (configs/preprocess/) and run :func:`asa.api.preprocess`."""

from __future__ import annotations

from asa.api import preprocess
from asa.cli.common import console_main

__all__ = ["main"]

main = console_main("asa-preprocess", "preprocess", preprocess)

if __name__ == "__main__":
    main()
