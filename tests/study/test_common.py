"""asa/study/common.py: a scale's command line, the settings record and the Markdown of the reports."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from asa.study.common import add_scale_options, markdown_table, record_settings, scale_from_args, table_row


@dataclasses.dataclass
class Scale:
    cases: tuple[int, ...]
    size: str
    steps: int | None = None
    budget: float | None = None


SCALES = {"full": Scale(cases=(2, 8), size="S"), "quick": Scale(cases=(2,), size="tiny", steps=4)}


def _parse(*argv: str) -> tuple[str, Scale]:
    p = argparse.ArgumentParser()
    add_scale_options(p, SCALES, "full", {"full": "everything", "quick": "a check"})
    return scale_from_args(p.parse_args(argv), SCALES)


def test_every_field_of_the_scale_is_an_option_of_its_type():
    assert _parse() == ("full", SCALES["full"])
    assert _parse("--quick", "--cases", "4", "16") == ("quick", Scale(cases=(4, 16), size="tiny", steps=4))
    assert _parse("--scale", "quick", "--budget", "2.5", "--size", "M")[1] == Scale((2,), "M", 4, 2.5)
    with pytest.raises(SystemExit):  # an int field takes ints only
        _parse("--steps", "many")


def test_a_folder_holds_one_study_naming_the_settings_that_differ(tmp_path):
    record_settings(tmp_path, {"arms": ["asa"], "seed": 0})
    record_settings(tmp_path, {"arms": ("asa",), "seed": 0})  # the same settings once written as JSON
    with pytest.raises(SystemExit) as err:
        record_settings(tmp_path, {"arms": ["asa"], "seed": 1})
    assert err.value.code == 2  # a refusal, as every asa console script's
    grows, out = ("arms", "scale.repeats"), tmp_path / "grown"  # a rerun may add: a list gains entries, a count rises
    out.mkdir()
    record_settings(out, {"arms": ["asa"], "seed": 0, "scale": {"repeats": 2}}, grows=grows)
    record_settings(out, {"arms": ["asa", "mae"], "seed": 0, "scale": {"repeats": 5}}, grows=grows)
    for shrunk in ({"arms": ["mae"], "scale": {"repeats": 5}}, {"arms": ["asa", "mae"], "scale": {"repeats": 4}}):
        with pytest.raises(SystemExit):
            record_settings(out, {**shrunk, "seed": 0}, grows=grows)
    assert json.loads((out / "study.json").read_text())["scale"]["repeats"] == 5


def test_markdown_table_aligns_the_numbers_right():
    assert markdown_table(["arm", "Dice"], [["asa", "0.5"]], left=1) == "| arm | Dice |\n| --- | ---: |\n| asa | 0.5 |\n"
    assert table_row(["a", "b"]) == "| a | b |"
