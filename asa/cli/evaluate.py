"""`asa-evaluate`: compose the Hydra config (configs/evaluate/) and run :func:`asa.api.evaluate`."""

from __future__ import annotations

from asa.cli.help import hydra_script

__all__ = ["main"]

main = hydra_script("asa-evaluate", "evaluate")

if __name__ == "__main__":
    main()
