"""`asa-probe`: compose the Hydra config (configs/probe/) and run :func:`asa.api.probe`."""

from __future__ import annotations

from asa.api import probe
from asa.cli.common import console_main

__all__ = ["main"]

main = console_main("asa-probe", "probe", probe)

if __name__ == "__main__":
    main()
