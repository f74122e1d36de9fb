from __future__ import annotations

from pathlib import Path

import pytest

from asa.data import RegionSource, discover
from asa.data.synthetic.demo import write_demo_dataset
from asa.data.store_writer import build_store
from asa.data.preprocessing import PretrainPreprocess


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


@pytest.fixture(scope="session")
def store_cases(tmp_path_factory: pytest.TempPathFactory) -> list:
    """5 BIDS demo cases (32^3)."""
    return discover("bids", write_demo_dataset("bids", tmp_path_factory.mktemp("bids5"), cases=5, size=32, seed=3))


@pytest.fixture(scope="session")
def pretrain_stores(store_cases: list, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{"float16": folder, "float32": folder}: pretraining stores of `store_cases` (32^3 crops), with
    cluster region maps."""
    out = {}
    for dtype in ("float16", "float32"):
        out[dtype] = tmp_path_factory.mktemp(f"store-{dtype}")
        build_store(store_cases, out[dtype], preprocessor=PretrainPreprocess(32, regions=RegionSource("cluster", k=3)),
                    channels=("t1",), dtype=dtype, progress=False)
    return out
