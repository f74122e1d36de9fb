"""`asa-preprocess`: compose the Hydra config (configs/preprocess/) and run :func:`asa.api.preprocess`."""

from __future__ import annotations

from asa.cli.help import hydra_script

__all__ = ["main"]

main = hydra_script("asa-preprocess", "preprocess")

if __name__ == "__main__":
    main()
