"""`asa-predict`: compose the Hydra config (configs/predict/) and run :func:`asa.api.predict`."""

from __future__ import annotations

from asa.api import predict
from asa.cli.common import console_main

__all__ = ["main"]

main = console_main("asa-predict", "predict", predict)

if __name__ == "__main__":
    main()
