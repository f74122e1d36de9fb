"""scripts/record_study.py copies what a record needs from a study folder (per-case scores and the design among them,
nothing trained), refuses a folder that lacks one of them, and never writes over a record; its progress record
holds what a study folder needs to resume elsewhere, replaces only itself and is restored into a new folder only;
no file either writes is one the repository's git ignores, so a commit holds all of it."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.record_study import HEAD_START, MARK, RECORD, main


def _study(root: Path) -> Path:
    """A study folder as asa-study leaves it: what a record needs, and runs, checkpoints and logs it does not."""
    files = {"report/README.md": "# page", "report/contrasts.json": "[]", "report/contrasts.svg": "<svg/>",
             "transfer/scores.csv": "arm,n,seed,case,Dice_mean\nscratch,8,10,a,0.5\n", "transfer/runs.csv": "arm\n",
             "design.json": '{"looks": []}', "times.json": '{"sittings": []}', "pilot.json": '{"steps": 2400}',
             "checks/checks.json": "{}", "study.json": "{}", "transfer/runs/scratch-n8-s0/checkpoints/last.pt": "x",
             "logs/pilot.log": "log", "pretrain/mae-c40/encoder.pt": "x", "pretrain/exports.json": '{"mae-c40": 848}'}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_record_holds_the_scores_the_design_and_the_page_and_nothing_trained(tmp_path):
    study, dest = _study(tmp_path / "study"), tmp_path / "results" / "study-x"
    assert main([str(study), str(dest)]) == 0
    held = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert held == sorted(["report/README.md", "report/contrasts.json", "report/contrasts.svg", *RECORD[1:]])
    assert all((dest / name).read_bytes() == (study / name).read_bytes() for name in held)
    with pytest.raises(SystemExit, match="not empty: a record is written once"):
        main([str(study), str(dest)])


def test_a_study_without_its_design_or_scores_is_refused_before_anything_is_copied(tmp_path):
    study = _study(tmp_path / "study")
    (study / "design.json").unlink()
    (study / "transfer" / "scores.csv").unlink()
    with pytest.raises(SystemExit, match=r"lacks transfer/scores\.csv, design\.json: a record"):
        main([str(study), str(tmp_path / "record")])
    assert not (tmp_path / "record").exists()


def test_a_head_start_registered_in_the_design_brings_its_per_case_scores(tmp_path):
    study, dest = _study(tmp_path / "study"), tmp_path / "record"
    (study / "design.json").write_text('{"design": {"head_start": 600}, "looks": []}')
    with pytest.raises(SystemExit, match=r"lacks transfer/head-start/scores\.csv: a record"):
        main([str(study), str(dest)])
    assert not dest.exists()
    (study / HEAD_START).parent.mkdir(parents=True)
    (study / HEAD_START).write_text("arm,n,seed,case,Dice_mean\nscratch,8,10,a,0.3\n")
    (study / "transfer" / "head-start" / "transfer.md").write_text("summary")  # a summary, not a score: not copied
    assert main([str(study), str(dest)]) == 0
    assert (dest / HEAD_START).read_bytes() == (study / HEAD_START).read_bytes()
    assert not (dest / "transfer" / "head-start" / "transfer.md").exists()
    (study / "design.json").write_text('{"design": {"head_start": null}, "looks": []}')  # none registered
    assert main([str(study), str(tmp_path / "without")]) == 0 and not (tmp_path / "without" / HEAD_START).exists()


def test_a_head_start_not_before_the_end_point_asks_for_no_head_start_scores(tmp_path):
    """The pilot's end point at or before --head-start: the study scores no run at the head start, and its record,
    complete without them, is written."""
    study, dest = _study(tmp_path / "study"), tmp_path / "record"
    (study / "design.json").write_text('{"design": {"head_start": 600}, "looks": []}')
    (study / "pilot.json").write_text('{"steps": 600}')
    assert main([str(study), str(dest)]) == 0 and not (dest / HEAD_START).exists()
    (study / "pilot.json").write_text('{"steps": 601}')
    with pytest.raises(SystemExit, match=r"lacks transfer/head-start/scores\.csv"):
        main([str(study), str(tmp_path / "other")])


def test_a_progress_record_holds_the_scored_runs_and_the_design_and_resumes_in_a_new_folder_only(tmp_path):
    study, dest = _study(tmp_path / "study"), tmp_path / "results" / "study-x-progress"
    scored = study / "transfer" / "runs" / "scratch-n8-s0"
    for name, text in (("scores.json", '{"scores": []}'), ("splits.json", "{}"), ("wall_time.json", "{}")):
        (scored / name).write_text(text)
    (study / "transfer" / "runs" / "mae-n8-s0" / "checkpoints").mkdir(parents=True)  # trained, not scored yet
    (study / "transfer" / "runs" / "mae-n8-s0" / "splits.json").write_text("{}")
    (study / "pilot" / "runs" / "scratch-n8-s0").mkdir(parents=True)
    (study / "pilot" / "runs" / "scratch-n8-s0" / "scores.json").write_text('{"scores": []}')
    assert main(["--progress", str(study), str(dest)]) == 0
    held = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    runs = ["pilot/runs/scratch-n8-s0/scores.json", *(f"transfer/runs/scratch-n8-s0/{name}" for name in
                                                      ("scores.json", "splits.json", "wall_time.json"))]
    assert held == sorted([MARK, "design.json", "times.json", "study.json", "pilot.json", "pretrain/exports.json",
                           *runs])  # each pretraining run's export step, fixed: a run trained again exports there
    assert all((dest / name).read_bytes() == (study / name).read_bytes() for name in held if name != MARK)
    # the next sitting's progress replaces the record whole; nothing else is ever written over
    (study / "transfer" / "runs" / "mae-n8-s0" / "scores.json").write_text('{"scores": [1]}')
    assert main(["--progress", str(study), str(dest)]) == 0
    assert (dest / "transfer" / "runs" / "mae-n8-s0" / "scores.json").read_text() == '{"scores": [1]}'
    assert sorted(p.name for p in dest.parent.iterdir()) == ["study-x-progress"]  # nothing left beside it
    final = tmp_path / "results" / "study-x"
    assert main([str(study), str(final)]) == 0
    with pytest.raises(SystemExit, match="not a progress record"):
        main(["--progress", str(study), str(final)])
    with pytest.raises(SystemExit, match="not a progress record"):
        main(["--restore", str(final), str(tmp_path / "new")])
    # restored into a new folder, without the record's own mark; a folder that holds something is refused
    assert main(["--restore", str(dest), str(tmp_path / "new")]) == 0
    assert sorted(str(p.relative_to(tmp_path / "new")) for p in (tmp_path / "new").rglob("*") if p.is_file()) == [
        name for name in sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) if name != MARK]
    with pytest.raises(SystemExit, match="not empty: --restore writes a new study folder"):
        main(["--restore", str(dest), str(study)])
    (study / "times.json").unlink()
    with pytest.raises(SystemExit, match="lacks times.json"):
        main(["--progress", str(study), str(dest)])


def test_git_ignores_no_file_a_record_or_a_progress_record_holds(tmp_path):
    """A progress record whose scored runs git ignores (a ``runs/`` pattern matching ``<stage>/runs/<run>/``) is
    committed without them, and a study restored from it trains those runs again."""
    repo = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    study = _study(tmp_path / "study")
    for stage in ("pilot", "transfer"):
        (study / stage / "runs" / "scratch-n8-s0").mkdir(parents=True, exist_ok=True)
        for name in ("scores.json", "splits.json", "wall_time.json"):
            (study / stage / "runs" / "scratch-n8-s0" / name).write_text("{}")
    held = []
    for args, name in ((["--progress"], "study-x-progress"), ([], "study-x")):
        dest = tmp_path / "results" / name
        assert main([*args, str(study), str(dest)]) == 0
        held += [f"benchmarks/results/{name}/{p.relative_to(dest)}" for p in dest.rglob("*") if p.is_file()]
    assert {f"benchmarks/results/study-x-progress/{name}" for name in
            ("pilot/runs/scratch-n8-s0/scores.json", "pretrain/exports.json")} <= set(held)
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=repo, capture_output=True,
                             text=True, input="\n".join(held))
    assert ignored.returncode in (0, 1), ignored.stderr
    assert ignored.stdout.split() == []


def test_a_progress_record_says_which_instance_of_its_encoder_each_scored_run_started_from(tmp_path):
    """A pretraining run trained again on a new machine is another instance of it: each scored run's entry names the
    encoder file it started from and that file's sha256 as it was when the run was first recorded."""
    study, dest = _study(tmp_path / "study"), tmp_path / "results" / "study-x-progress"
    encoder = study / "pretrain" / "mae-c40" / "checkpoints" / "encoder.pt"
    encoder.parent.mkdir(parents=True)
    encoder.write_bytes(b"machine A")

    def scored(run: str, start: str) -> None:
        folder = study / "transfer" / "runs" / run
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "scores.json").write_text("{}")
        (folder / "command.txt").write_text(f"asa-finetune data=msd output_dir={folder} model.pretrained={start}\n")

    scored("mae-c40-n8-s0", str(encoder))
    scored("scratch-n8-s0", "null")
    assert main(["--progress", str(study), str(dest)]) == 0
    entry = {"encoder": "pretrain/mae-c40/checkpoints/encoder.pt", "sha256": hashlib.sha256(b"machine A").hexdigest()}
    assert json.loads((dest / MARK).read_text())["started_from"] == {"transfer/runs/mae-c40-n8-s0": entry}
    encoder.write_bytes(b"machine B")  # the folder lost, restored, the pretraining trained again
    scored("mae-c40-n8-s1", str(encoder))
    assert main(["--progress", str(study), str(dest)]) == 0
    assert json.loads((dest / MARK).read_text())["started_from"] == {
        "transfer/runs/mae-c40-n8-s0": entry,
        "transfer/runs/mae-c40-n8-s1": {**entry, "sha256": hashlib.sha256(b"machine B").hexdigest()}}
    encoder.unlink()  # an encoder gone: which instance a new run started from cannot be said, and is not guessed
    scored("mae-c40-n8-s2", str(encoder))
    with pytest.raises(SystemExit, match="mae-c40-n8-s2 started from cannot be recorded"):
        main(["--progress", str(study), str(dest)])
