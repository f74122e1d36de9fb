"""`python -m asa.study.transfer SHARE.json`, the scoring share's command line: a share it cannot use is refused in
one line naming the file (exit 2); a share whose runs are all scored is left as it is."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from asa.study import transfer

RUN = transfer.Run("scratch", 8, 0, ("a", "b"), ("data=msd",), Path("run"), val=("c",), test=("d",))


def _share(run_dir: Path) -> dict:
    return {"groups": [[{**dataclasses.asdict(RUN), "run_dir": str(run_dir)}]], "test": ["d"], "device": "cpu"}


@pytest.mark.parametrize("text, why", [
    (None, "cannot be read"),
    ("{", "not a scoring share (JSONDecodeError"),
    ('{"test": [], "device": "cpu"}', "not a scoring share (KeyError: 'groups')"),
    ('{"groups": [[{"arm": "scratch"}]], "test": [], "device": "cpu"}', "not a scoring share (KeyError: 'run_dir')"),
    ('{"groups": [[{"run_dir": "r", "bogus": 1, "train": [], "overrides": [], "val": [], "test": [], '
     '"supervised_trained": []}]], "test": [], "device": "cpu"}', "not a scoring share (TypeError"),
    ('{"groups": 3, "test": [], "device": "cpu"}', "not a scoring share (TypeError"),
])
def test_a_share_that_is_not_one_is_refused_naming_the_file(tmp_path, capsys, text, why):
    share = tmp_path / "share0.json"
    if text is not None:
        share.write_text(text)
    with pytest.raises(SystemExit) as refused:
        transfer.score_main([str(share)])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"[transfer] {share}: {why}")


def test_a_share_is_read_back_as_written_and_its_scored_runs_are_left_alone(tmp_path, capsys):
    share = tmp_path / "share0.json"
    share.write_text(json.dumps(_share(tmp_path / "run")))
    groups, test, device = transfer.read_share(share)
    assert groups == [[dataclasses.replace(RUN, run_dir=tmp_path / "run")]] and (test, device) == (["d"], "cpu")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "scores.json").write_text("{}")
    transfer.score_main([str(share)])  # nothing left to score: no dataset is read
    assert capsys.readouterr().out == "" and (tmp_path / "run" / "scores.json").read_text() == "{}"


@pytest.mark.slow  # the scoring module's command line, in a child process
def test_the_scoring_command_line_has_help():
    said = subprocess.run([sys.executable, "-m", "asa.study.transfer", "--help"], capture_output=True, text=True)
    assert said.returncode == 0 and "scoring/<unit>.json" in said.stdout
