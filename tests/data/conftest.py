from __future__ import annotations

from pathlib import Path

import pytest

from asa.data.demo import write_demo_dataset


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory):
    """Factory: demo dataset of a layout (3 cases, 32^3), written once per session."""
    base = tmp_path_factory.mktemp("demo")
    made: dict[str, Path] = {}

    def get(layout: str) -> Path:
        if layout not in made:
            made[layout] = write_demo_dataset(layout, base / layout, cases=3, size=32, seed=0)
        return made[layout]

    return get
