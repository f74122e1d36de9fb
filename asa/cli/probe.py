"""`asa-probe`: compose the Hydra config (configs/probe/) and run :func:`asa.api.probe`."""

from __future__ import annotations

from asa.cli.help import hydra_script

__all__ = ["main"]

main = hydra_script("asa-probe", "probe")

if __name__ == "__main__":
    main()
